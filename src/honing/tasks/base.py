"""The interface a task family implements, and the dispatcher over families.

A prompt row (schemas.prompts.Prompts) names its family in `task`: "micro",
"reference", "reasoning_gym:chain_sum" (the family, then what it needs to know
of the task). A family gives

    verify        the rule check: (response, prompt row) -> True / False, or None
                  when the row has nothing to check against
    final_answer  what `verify` read from the response (for people: filter reasons)

and, optionally, the same rule check as polars expressions (`vectorized`, a
`VectorizedRule`), so that filters, pairs and SFT records check millions of answers
in one query; a family without it (reasoning_gym: the gym's own scorer) is checked
row by row through `verify`. `Tasks.rule_check` does either, per family, over a
frame of answers.

And, where a rule can check an answer step by step (the micro world's oracle):

    check           the rule oracle as a critic: (prompt, response) ->
                    (feedback text, ParsedFeedback with the refinement)
    feedback_format the name of the format `check` writes, and parse_feedback
                    its parser (the policy learns to write it too)
    splice          continue mode: the answer up to its first wrong step with the
                    recomputed value in place (a `Splice`), or None when the
                    feedback does not apply to this answer
    noisy_answer    the meta corpus's balanced-noise answers: (prompt row, rng,
                    p_wrong) -> an answer whose steps are each wrong with p_wrong

A prompt row is a mapping with at least `task`, `answer` and `metadata` (the
family's own data as JSON text, e.g. a reasoning-gym entry).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import polars as pl

from honing.errors import HoningError
from honing.method.feedback import ParsedFeedback

Row = Mapping[str, Any]


class TaskError(HoningError, ValueError):
    """A task the user named that cannot be built or checked (one line)."""


class Splice(NamedTuple):
    text: str  # the corrected answer up to the flagged step (or whole)
    complete: bool  # True: a whole answer, nothing left for the policy to continue


# The characters Python's str.strip() and the `re` module's \s treat as whitespace
# (str.isspace). polars' strip_chars() and the Rust regex \s leave \x1c-\x1f out:
# expressions that must read text as the Python rule does name these explicitly.
PY_SPACE = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
            "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")


class VectorizedRule(NamedTuple):
    """A family's rule check as polars expressions, equal to its Python `final_answer`
    and `verify` on every input (tests hold them to it). The check is split in two so
    that the answer is read once per response (reading is the costly part)."""

    final_answer: Callable[[pl.Expr], pl.Expr]  # response -> the final answer read (String, null: none)
    # the prompt's answer -> the reference as `matches` compares it (null: no answer), read once per prompt
    reference: Callable[[pl.Expr], pl.Expr]
    matches: Callable[[pl.Expr, pl.Expr], pl.Expr]  # (final answer, reference) -> Boolean, null: no reference

    def verify(self, response: pl.Expr, answer: pl.Expr) -> pl.Expr:
        return self.matches(self.final_answer(response), self.reference(answer))


@dataclass(frozen=True)
class TaskFamily:
    name: str
    verify: Callable[[str, Row], bool | None]
    final_answer: Callable[[str], str | None]
    check: Callable[[str, str], tuple[str, ParsedFeedback]] | None = None
    feedback_format: str | None = None
    parse_feedback: Callable[[str], ParsedFeedback] | None = None
    splice: Callable[[str, ParsedFeedback], Splice | None] | None = None
    noisy_answer: Callable[[Row, random.Random, float], str] | None = None
    vectorized: VectorizedRule | None = None  # verify and final_answer as expressions, where the rule allows


def family_name(task: str) -> str:
    """ "reasoning_gym:chain_sum" -> "reasoning_gym"."""
    return task.partition(":")[0]


class Tasks:
    """The families of a set of prompt rows; each row's `task` picks its family."""

    def __init__(self, families: Mapping[str, TaskFamily]):
        self.families = dict(families)

    def family(self, row: Row) -> TaskFamily:
        name = family_name(row["task"])
        if name not in self.families:
            raise TaskError(f"prompt {row.get('id')!r}: task {row['task']!r} is of family {name!r}, which was "
                            f"not loaded (loaded: {', '.join(sorted(self.families)) or 'none'})")
        return self.families[name]

    def verify(self, response: str, row: Row | None) -> bool | None:
        """The rule check of `row`'s family; None for an unknown prompt or one with no reference."""
        return None if row is None else self.family(row).verify(response, row)

    def final_answer(self, response: str, row: Row) -> str | None:
        return self.family(row).final_answer(response)

    def row_columns(self) -> list[str] | None:
        """The prompt columns `rule_check` reads: id, task and answer where every family
        has a vectorized rule; every column (None) where one verifies whole rows."""
        if all(f.vectorized is not None for f in self.families.values()):
            return ["id", "task", "answer"]
        return None

    def rule_check(self, responses: pl.Series, prompt_ids: pl.Series, prompts: pl.DataFrame) -> pl.DataFrame:
        """`verify` and `final_answer` over a column: each response against the prompt
        row (of `prompts`, by id) that `prompt_ids` names. Returns `correct` (Boolean)
        and `final_answer` (String, as the family reads it), in row order, null where
        `verify` and `final_answer` give None (an unknown prompt included), beside
        what the check looked up: the prompt's `family` and reference `answer`. Families
        with a `vectorized` rule are checked as polars expressions, the others row by
        row (one call per distinct prompt and response). What depends on the prompt
        alone (its family, its reference as the rule compares it) is read once per
        prompt, before the prompts are matched to the rows."""
        table = prompts.unique("id", keep="last", maintain_order=True)  # as `aligned` reads them
        task = table.get_column("task").cast(pl.String)
        named = task.unique().drop_nulls()  # a few task names: read each name's family once
        table = pl.DataFrame([
            table.get_column("id"), task.replace_strict(named, named.str.extract(r"^([^:]*)", 1), default=None
                                                        ).alias("family"),
            (table.get_column("answer").cast(pl.String) if "answer" in table.columns
             else pl.Series([None] * table.height, dtype=pl.String)).alias("answer")])
        present = set(table.get_column("family").drop_nulls().unique().to_list())
        vectorized = [(pl.col("family") == name, family.vectorized) for name, family in sorted(self.families.items())
                      if family.vectorized is not None and name in present]
        reference = pl.lit(None, pl.String)
        for here, rule in vectorized:
            reference = pl.when(here).then(rule.reference(pl.col("answer"))).otherwise(reference)
        table = table.with_columns(reference.alias("_reference"))
        rows = pl.DataFrame([prompt_ids.alias("id")]).join(table, on="id", how="left", maintain_order="left")
        family = rows.get_column("family")
        names = family.drop_nulls().unique().sort().to_list()
        for name in names:
            if name not in self.families:  # the error Tasks.family gives, for the first such row
                self.family(aligned(prompt_ids, prompts).row(int((family == name).arg_true()[0]), named=True))
        frame = rows.select(responses.alias("response"), "family", "answer", "_reference")
        read, correct = pl.lit(None, pl.String), pl.lit(None, pl.Boolean)
        for here, rule in vectorized:
            read = pl.when(here).then(rule.final_answer(pl.col("response"))).otherwise(read)
        for here, rule in vectorized:
            correct = pl.when(here).then(rule.matches(pl.col("final_answer"), pl.col("_reference"))).otherwise(correct)
        # lazy: a rule's expression may read one column twice (the answer line, then
        # whether it was found), and only a lazy query computes it once
        out = (frame.lazy().with_columns(read.alias("final_answer"))
               .select(correct.alias("correct"), "final_answer", "family", "answer").collect())
        python_rule = [name for name in names if self.families[name].vectorized is None]
        if python_rule:
            full = aligned(prompt_ids, prompts)
            for name in python_rule:
                out = self._python_rule(out, responses, full, family == name, self.families[name])
        return out

    @staticmethod
    def _python_rule(out: pl.DataFrame, responses: pl.Series, prompts: pl.DataFrame, mask: pl.Series,
                     family: TaskFamily) -> pl.DataFrame:
        """`out` with the rows under `mask` checked by the family's Python verify."""
        rows = mask.arg_true()
        seen: dict[tuple[Any, str], tuple[bool | None, str | None]] = {}
        correct, answer = [], []
        for response, row in zip(responses.gather(rows).to_list(), prompts[rows].iter_rows(named=True),
                                 strict=True):
            key = (row.get("id"), response)
            if key not in seen:
                seen[key] = (family.verify(response, row), family.final_answer(response))
            correct.append(seen[key][0])
            answer.append(seen[key][1])
        return out.with_columns(out.get_column("correct").scatter(rows, pl.Series(correct, dtype=pl.Boolean)),
                                out.get_column("final_answer").scatter(rows, pl.Series(answer, dtype=pl.String)))

    def noisy_answer(self, row: Row) -> Callable[[random.Random, float], str] | None:
        """`row`'s balanced-noise writer, bound to it; None where its family has none."""
        write = self.family(row).noisy_answer
        return None if write is None else (lambda rng, p: write(row, rng, p))


def aligned(prompt_ids: pl.Series, prompts: pl.DataFrame) -> pl.DataFrame:
    """The prompt row (of `prompts`, by id) of each id in `prompt_ids`, in their order;
    a row of nulls but its id for an unknown prompt (its `task` is null)."""
    ids = pl.DataFrame([prompt_ids.alias("id")])
    return ids.join(prompts.unique("id", keep="last", maintain_order=True), on="id", how="left",
                    maintain_order="left")
