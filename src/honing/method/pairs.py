"""build_pairs: preference pairs from the model's own answers and refinements.

Two rules build pairs (`pairs`, either or both):

- "best_worst" (SRT, EVOLVE): for each prompt, every answer the iteration produced
  (all samples, all refinement rounds) is scored by the chosen signal; chosen = the
  best, rejected = the worst, kept only if the margin reaches `min_margin`.
- "refined_original" (EVOLVE's pairs across rounds): for each candidate whose
  original answer (round 0) the task's rule check says is wrong, chosen = the last
  of its refinements that the rule check says is right, rejected = the original.
  Only verifiably better refinements make pairs; scores are the rule check's 1/0.

Each rule gives at most `max_pairs_per_prompt` pairs per prompt. A pair is written
in TRL's conversational prompt/chosen/rejected format.

Both rules are polars queries over a frame that holds whole prompts (ranks within a
prompt, windows over candidates): `build_pairs` runs them on all rows at once,
`pair_stream` on a stream of such frames, with the same pairs in the same order.
The templates and messages helpers here (`rendered`, `messages`) serve build_sft too.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2
import jinja2.nodes
import polars as pl

from honing.artifacts.ahead import ordered_map
from honing.method.prompts import PromptSet
from honing.method.repeats import repeats
from honing.method.signals import self_consistency_column

if TYPE_CHECKING:
    from honing.tasks.base import Tasks

SIGNALS = ("rule", "score", "rule+score", "self_consistency", "reward", "judge")  # honing.method.signals
COMPUTED_SIGNALS = ("self_consistency", "reward", "judge")  # computed over all rows first, passed as `values`
PAIR_RULES = ("best_worst", "refined_original")


@dataclass(frozen=True)
class PairsConfig:
    signal: str = "rule"  # one of SIGNALS; rule: 1/0 by the task's rule check; score: the critic's 1-10
    min_margin: float = 1.0
    max_pairs_per_prompt: int = 1
    pairs: tuple[str, ...] = ("best_worst",)  # the rules that build pairs, from PAIR_RULES


def signal_value(signal: str, correct: bool | None, score: int | None,
                 computed: float | None = None) -> float | None:
    """An answer's value by `signal`; `computed` is its value by a computed signal."""
    if signal in COMPUTED_SIGNALS:
        return computed
    if signal == "rule":
        return None if correct is None else float(correct)
    if signal == "score":
        return None if score is None else float(score)
    # rule+score: correctness first, the critic's score breaks ties
    if correct is None:
        return None
    return float(correct) * 10 + (score or 0) / 10


def signal_expr(signal: str) -> pl.Expr:
    """`signal_value` over columns `correct`, `score` and `computed`."""
    if signal in COMPUTED_SIGNALS:
        return pl.col("computed").cast(pl.Float64)
    correct, score = pl.col("correct").cast(pl.Float64), pl.col("score").cast(pl.Float64)
    if signal == "rule":
        return correct
    if signal == "score":
        return score
    return correct * 10 + _tenths(pl.col("score")).fill_null(0.0)


def _tenths(score: pl.Expr) -> pl.Expr:
    """score / 10 as Python divides: polars multiplies by 0.1 for a constant divisor
    (0.30000000000000004 for 3), so each distinct score is divided in Python."""
    def apply(values: pl.Series) -> pl.Series:
        distinct = values.drop_nulls().unique()
        tenths = pl.Series([v / 10 for v in distinct.to_list()], dtype=pl.Float64)
        return values.replace_strict(distinct, tenths, default=None, return_dtype=pl.Float64)
    return score.map_batches(apply, return_dtype=pl.Float64, is_elementwise=True)


def check_config(cfg: PairsConfig) -> None:
    if cfg.signal not in SIGNALS:
        raise ValueError(f"build_pairs.signal must be one of {', '.join(SIGNALS)}, found {cfg.signal!r}")
    unknown = [rule for rule in cfg.pairs if rule not in PAIR_RULES]
    if unknown or not cfg.pairs:
        raise ValueError(f"build_pairs.pairs must list some of {', '.join(PAIR_RULES)}, found {list(cfg.pairs)!r}")


def build_pairs(refinements: pl.DataFrame, prompts: pl.DataFrame, templates: PromptSet,
                cfg: PairsConfig, iteration: str, *, tasks: Tasks,
                values: Mapping[str, float | None] | None = None) -> pl.DataFrame:
    """`prompts`: the prompt rows (id, answer, task, metadata); `tasks`: their task
    families, whose rule check gives the `rule` signal; `values`: refinement row id ->
    its value by a computed signal (self_consistency, reward, judge: honing.method.signals)."""
    check_config(cfg)
    if cfg.signal in COMPUTED_SIGNALS and values is None:
        raise ValueError(f"build_pairs.signal {cfg.signal!r} needs each answer's value computed first (values=)")
    frames = list(pair_stream(lambda: [(refinements, prompts)], templates, cfg, iteration, tasks=tasks,
                              values=values))
    return pl.concat(frames) if frames else pl.DataFrame(schema=PAIR_SCHEMA)


def pair_stream(chunks: Callable[[], Iterable[tuple[pl.DataFrame, pl.DataFrame]]], templates: PromptSet,
                cfg: PairsConfig, iteration: str, *, tasks: Tasks,
                values: Mapping[str, float | None] | None = None) -> Iterator[pl.DataFrame]:
    """`build_pairs` over a stream: `chunks()` gives (refinements of whole prompts,
    their prompt rows), sorted by candidate across frames; it is read once per rule.
    Without `values`, the self_consistency signal is computed frame by frame."""
    check_config(cfg)
    if cfg.signal in ("reward", "judge") and values is None:
        raise ValueError(f"build_pairs.signal {cfg.signal!r} needs each answer's value computed first (values=)")

    def best_and_worst(chunk: tuple[pl.DataFrame, pl.DataFrame]) -> pl.DataFrame:
        return best_worst(_checked(*chunk, cfg, tasks, values), templates, cfg, iteration)

    def across_rounds(chunk: tuple[pl.DataFrame, pl.DataFrame]) -> pl.DataFrame:
        rows = _checked(*chunk, cfg, tasks, values)
        pairs = refined_original(rows, templates, cfg, iteration)
        if "best_worst" in cfg.pairs:  # best_worst may have paired the same two answers already
            have = best_worst(rows, templates, cfg, iteration).select("prompt_id", *_answers())
            pairs = (pairs.with_columns(_answers())
                     .join(have, on=["prompt_id", "_chosen", "_rejected"], how="anti", maintain_order="left")
                     .drop("_chosen", "_rejected"))
        return pairs

    # frames are paired two at a time (honing.artifacts.ahead), in order
    if "best_worst" in cfg.pairs:
        yield from ordered_map(best_and_worst, chunks())
    if "refined_original" in cfg.pairs:
        yield from ordered_map(across_rounds, chunks())


def _answers() -> list[pl.Expr]:
    """A pair's chosen and rejected text, to compare pairs by."""
    return [pl.col("chosen").list.first().struct.field("content").alias("_chosen"),
            pl.col("rejected").list.first().struct.field("content").alias("_rejected")]


def _checked(refinements: pl.DataFrame, prompts: pl.DataFrame, cfg: PairsConfig, tasks: Tasks,
             values: Mapping[str, float | None] | None) -> pl.DataFrame:
    """The rows with their rule check (`correct`) and computed signal (`computed`)."""
    read = tasks.rule_check(refinements.get_column("response"), refinements.get_column("prompt_id"), prompts)
    rows = refinements.with_columns(correct=read.get_column("correct"))
    if "score" not in rows.columns:
        rows = rows.with_columns(score=pl.lit(None, pl.Int64))
    if values is not None:
        ids = rows.get_column("id").to_list()
        computed = pl.Series([values.get(i) for i in ids], dtype=pl.Float64)
    elif cfg.signal == "self_consistency":
        computed = self_consistency_column(refinements, prompts, tasks)
    else:
        computed = pl.Series([None] * rows.height, dtype=pl.Float64)
    return rows.with_columns(computed=computed)


def best_worst(rows: pl.DataFrame, templates: PromptSet, cfg: PairsConfig, iteration: str) -> pl.DataFrame:
    """Per prompt (in the order they first have a value), the k-th best answer against
    the k-th worst while the margin holds; each response counted once (its last row),
    ties broken by id so the output does not depend on input order."""
    scored = (rows.with_row_index("_position").with_columns(_value=signal_expr(cfg.signal))
              .filter(pl.col("_value").is_not_null()))
    prompt = pl.col("prompt_id")
    if scored.get_column("prompt_id").is_sorted():  # as streamed: each prompt one run of rows, no window
        opens, closes = prompt.ne_missing(prompt.shift(1)), prompt.ne_missing(prompt.shift(-1))
        scored = scored.with_columns(_first=pl.when(opens).then("_position").forward_fill(),
                                     _text=pl.when(closes).then("prompt").backward_fill())
    else:
        scored = scored.with_columns(_first=pl.col("_position").min().over("prompt_id"),
                                     _text=pl.col("prompt").last().over("prompt_id"))
    # _first names a prompt as well as its id does, and is cheaper to hash; sorted by it,
    # each prompt is one run of rows, ranked from where its run starts and ends (no window),
    # and the k-th worst answer is k rows before its run's end (no join)
    position, first = pl.int_range(pl.len(), dtype=pl.Int64), pl.col("_first")
    start = pl.when(first.ne_missing(first.shift(1))).then(position).forward_fill()
    end = pl.when(first.ne_missing(first.shift(-1))).then(position).backward_fill()
    ranked = (scored.filter(repeats(scored, "_first", "response", later=True).not_())
              .sort(["_first", "_value", "id"], descending=[False, True, False], maintain_order=True)
              .with_columns(_rank=position - start, _count=(end - start + 1).cast(pl.UInt32),
                            _worst_at=start + end - position))
    best = ranked.filter(pl.col("_rank") < pl.min_horizontal(pl.lit(cfg.max_pairs_per_prompt),
                                                             pl.col("_count") // 2))
    worst = ranked.select(pl.col("id").alias("_worst_id"), pl.col("response").alias("_worst"),
                          pl.col("_value").alias("_worst_value"))[best.get_column("_worst_at")]
    pairs = (pl.concat([best, worst], how="horizontal")
             .with_columns(_margin=pl.col("_value") - pl.col("_worst_value"))
             .filter((pl.col("_margin") >= cfg.min_margin) & (pl.col("_margin") > 0)))
    return _pair_frame(pairs, templates, iteration, chosen=("id", "response", "_value"),
                       rejected=("_worst_id", "_worst", "_worst_value"))


def refined_original(rows: pl.DataFrame, templates: PromptSet, cfg: PairsConfig, iteration: str) -> pl.DataFrame:
    """Pairs across rounds: a candidate's last refinement that the rule check says is
    right (chosen) against its original answer that it says is wrong (rejected); the
    same two answers once per prompt, at most max_pairs_per_prompt, by candidate."""
    chains = rows.sort("candidate_id", "round", maintain_order=True).with_columns(
        _step=pl.int_range(pl.len()).over("candidate_id"))
    originals = chains.filter((pl.col("_step") == 0) & (pl.col("round") == 0) & (pl.col("correct") == False))  # noqa: E712
    right = (chains.filter((pl.col("_step") > 0) & (pl.col("correct") == True))  # noqa: E712
             .group_by("candidate_id", maintain_order=True).last()
             .select("candidate_id", pl.col("id").alias("_chosen_id"), pl.col("response").alias("_chosen")))
    pairs = (originals.join(right, on="candidate_id", how="inner", maintain_order="left")
             .filter(pl.struct("prompt_id", "_chosen", "response").is_first_distinct())
             .filter(pl.int_range(pl.len()).over("prompt_id") < cfg.max_pairs_per_prompt)
             .with_columns(_text=pl.col("prompt"), _one=pl.lit(1.0), _zero=pl.lit(0.0)))
    return _pair_frame(pairs, templates, iteration, chosen=("_chosen_id", "_chosen", "_one"),
                       rejected=("id", "response", "_zero"))


def _pair_frame(pairs: pl.DataFrame, templates: PromptSet, iteration: str, *, chosen: tuple[str, str, str],
                rejected: tuple[str, str, str]) -> pl.DataFrame:
    """Pair rows from columns (row id, response, score) of the chosen and the rejected answer."""
    prompt = rendered(templates, "answer", pairs, prompt="_text")
    return pairs.select(
        pl.concat_str([pl.col(chosen[0]), pl.lit(">"), pl.col(rejected[0])]).alias("id"),
        "prompt_id",
        messages("user", prompt).alias("prompt"),
        messages("assistant", pl.col(chosen[1])).alias("chosen"),
        messages("assistant", pl.col(rejected[1])).alias("rejected"),
        pl.col(chosen[2]).alias("chosen_score"), pl.col(rejected[2]).alias("rejected_score"),
        (pl.col(chosen[2]) - pl.col(rejected[2])).alias("margin"),
        pl.lit(iteration, pl.String).alias("iteration"),
    ).cast(PAIR_SCHEMA)


# ---------------------------------------------------------------- messages and templates over columns


def messages(role: str, content: pl.Expr | pl.Series) -> pl.Expr:
    """A one-message conversation per row: [{"role": role, "content": content}]."""
    content = pl.lit(content) if isinstance(content, pl.Series) else content
    return pl.concat_list(pl.struct(pl.lit(role, pl.String).alias("role"), content.alias("content")))


def rendered(templates: PromptSet, name: str, frame: pl.DataFrame, **columns: str) -> pl.Series:
    """`templates.<name>(**values)` for each row of `frame`, the values read from
    `columns` (template variable -> column). A template that only places its values
    in fixed text is rendered as one string concatenation; any other (filters,
    conditions) through Jinja, once per distinct set of values."""
    pieces = _plain_template(Path(templates.folder), name, tuple(sorted(columns)))
    if frame.height == 0:
        return pl.Series(name, [], dtype=pl.String)
    if pieces is not None:
        parts = [pl.lit(text) if variable is None else pl.col(columns[variable]) for variable, text in pieces]
        return frame.select(pl.concat_str(parts).alias(name)).to_series()
    render = getattr(templates, name)
    distinct = frame.select(list(columns.values())).unique(maintain_order=True)
    texts = [render(**dict(zip(columns, row, strict=True))) for row in distinct.iter_rows()]
    table = distinct.with_columns(pl.Series(name, texts, dtype=pl.String))
    return (frame.select(list(columns.values())).join(table, on=list(columns.values()), how="left",
                                                      maintain_order="left", nulls_equal=True)
            .get_column(name))


_SENTINEL = "\x00honing:{}\x00"


@functools.lru_cache(maxsize=64)
def _plain_template(folder: Path, name: str, variables: tuple[str, ...]) -> tuple[tuple[str | None, str], ...] | None:
    """The template as (variable or None, fixed text) pieces if it only places values
    in fixed text, else None. Proved on its syntax tree (outputs of text and names,
    nothing else), then checked on a probe against Jinja's own rendering."""
    source = (folder / f"{name}.jinja2").read_text(encoding="utf-8")
    body = jinja2.Environment().parse(source).body
    if not all(isinstance(node, jinja2.nodes.Output) and all(
            isinstance(n, jinja2.nodes.TemplateData) or (isinstance(n, jinja2.nodes.Name) and n.name in variables)
            for n in node.nodes) for node in body):
        return None
    templates = PromptSet(folder)
    marked = getattr(templates, name)(**{v: _SENTINEL.format(v) for v in variables})
    pieces: list[tuple[str | None, str]] = []
    for k, part in enumerate(re.split("\x00honing:([^\x00]*)\x00", marked)):
        if k % 2:
            pieces.append((part, ""))
        elif part:
            pieces.append((None, part))
    probe = {v: f"<{v}> & 'x'\n{{{{ y }}}} é\t" for v in variables}
    fast = "".join(text if variable is None else probe[variable] for variable, text in pieces)
    return tuple(pieces) if fast == getattr(templates, name)(**probe) else None


MESSAGES = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))
PAIR_SCHEMA = {
    "id": pl.String, "prompt_id": pl.String, "prompt": MESSAGES, "chosen": MESSAGES,
    "rejected": MESSAGES, "chosen_score": pl.Float64, "rejected_score": pl.Float64,
    "margin": pl.Float64, "iteration": pl.String,
}
