"""SFT records in TRL's conversational prompt/completion format.

- `meta_records`: the meta-skill corpus (SELF, SRT): prompt + response → feedback,
  and prompt → refinement.
- `iteration_records` (build_sft): the iteration's answers, prompt → answer, the
  self-critic's records (right feedback on its answers, balanced: critic_data) and,
  from refinement chains, refine template → the better answer (EVOLVE).

Which answers (`answers`): "kept", the filter's kept final answers (the last round
of each candidate); or "last_verified", each candidate's chain read back to its last
round that the rule check confirms, so an answer a later round broke still counts
(prompts without a reference: the filter's kept final answer; one record per distinct
answer). Refinement records (`refinement_records: rewrite`, for presets with a
refine template): every chain step that the rule check says fixed a wrong answer,
as the refine template (previous answer + its feedback) → the refined answer.

The iteration's records are polars queries over frames that hold whole prompts
(windows over prompts and candidates, templates filled by string concatenation):
`iteration_records` runs them on all rows at once, `iteration_record_stream` on
streams of such frames (`RecordSources`), with the same records in the same order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import polars as pl

from honing.artifacts.ahead import ordered_map
from honing.method.critic_data import CriticRecordsConfig, example_stream
from honing.method.pairs import MESSAGES, messages, rendered
from honing.method.prompts import PromptSet, assistant, user

if TYPE_CHECKING:
    from honing.tasks.base import Tasks

SFT_SCHEMA = {"id": pl.String, "prompt": MESSAGES, "completion": MESSAGES, "kind": pl.String,
              "source_id": pl.String, "iteration": pl.String}


def _record(rid: str, prompt: str, completion: str, kind: str, source: str, iteration: str) -> dict:
    return {"id": rid, "prompt": [user(prompt)], "completion": [assistant(completion)],
            "kind": kind, "source_id": source, "iteration": iteration}


@dataclass(frozen=True)
class MetaRecordsConfig:
    feedback_records: bool = True
    refinement_records: str = "answer"  # answer: prompt → refinement; rewrite: refine template → refinement
    epochs_of_feedback: int = 1


def meta_records(corpus: pl.DataFrame, templates: PromptSet, cfg: MetaRecordsConfig,
                 iteration: str = "meta") -> pl.DataFrame:
    rows, seen, per_prompt = [], set(), Counter()
    for r in corpus.iter_rows(named=True):
        if cfg.feedback_records:
            rows.append(_record(f"{r['id']}/feedback", templates.feedback(r["prompt"], r["response"]),
                                r["feedback"], "feedback", r["id"], iteration))
        if cfg.refinement_records == "rewrite" and r["verdict"] == "incorrect":
            rows.append(_record(f"{r['id']}/refinement",
                                templates.refine(r["prompt"], r["response"], r["feedback"]),
                                r["refinement"], "refinement", r["id"], iteration))
        elif cfg.refinement_records == "answer" and (r["prompt_id"], r["refinement"]) not in seen:
            seen.add((r["prompt_id"], r["refinement"]))
            # a prompt's second distinct refinement (a critic that refines each answer its own way) is /refinement1
            k = per_prompt[r["prompt_id"]]
            per_prompt[r["prompt_id"]] += 1
            rows.append(_record(f"{r['prompt_id']}/refinement{k or ''}", templates.answer(r["prompt"]),
                                r["refinement"], "refinement", r["id"], iteration))
    return pl.DataFrame(rows, schema=SFT_SCHEMA)


ANSWERS = ("kept", "last_verified")  # which answers become answer records
REFINEMENT_RECORDS = ("none", "rewrite")


@dataclass(frozen=True)
class BuildSFTConfig:
    max_answers_per_prompt: int = 1
    feedback_records: bool = True  # the self-critic's records (see honing.method.critic_data)
    feedback: Mapping[str, Any] = field(default_factory=dict)  # CriticRecordsConfig fields
    answers: str = "kept"  # kept | last_verified (see the module's docstring)
    refinement_records: str = "none"  # none | rewrite: refine template -> the answer that fixed a wrong one

    def __post_init__(self):
        if self.answers not in ANSWERS:
            raise ValueError(f"answers must be one of {', '.join(ANSWERS)}, found {self.answers!r}")
        if self.refinement_records not in REFINEMENT_RECORDS:
            raise ValueError(f"refinement_records must be one of {', '.join(REFINEMENT_RECORDS)}, "
                             f"found {self.refinement_records!r}")


@dataclass(frozen=True)
class RecordSources:
    """Where `iteration_record_stream` reads: each a callable giving a fresh pass over
    frames that hold whole prompts (a prompt's rows in one frame)."""

    kept: Callable[[], Iterable[pl.DataFrame]]  # the filter's kept rows, in the filter's order
    # refinements (sorted by candidate across frames), their prompt rows, and (when
    # asked: last_verified) the filter's kept rows of those prompts
    chains: Callable[[bool], Iterable[tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame | None]]]
    round0: Callable[[], Iterable[tuple[pl.DataFrame, pl.DataFrame]]]  # refine's round 0, their prompt rows

    @classmethod
    def frames(cls, filtered: pl.DataFrame, refinements: pl.DataFrame, prompts: pl.DataFrame) -> RecordSources:
        """All rows at once, one frame each."""
        kept = filtered.filter(pl.col("kept"))
        return cls(kept=lambda: [kept],
                   chains=lambda with_kept: [(refinements, prompts, kept if with_kept else None)],
                   round0=lambda: [(refinements.filter(pl.col("round") == 0), prompts)])


def iteration_records(filtered: pl.DataFrame, refinements: pl.DataFrame, prompts: pl.DataFrame,
                      templates: PromptSet, cfg: BuildSFTConfig, iteration: str, *, tasks: Tasks) -> pl.DataFrame:
    """The answers (`cfg.answers`), the self-critic's records: right feedback on the
    iteration's answers, balanced (`honing.method.critic_data`), and (`refinement_records`)
    the chains' verified refinement steps."""
    frames = list(iteration_record_stream(RecordSources.frames(filtered, refinements, prompts), templates, cfg,
                                          iteration, tasks=tasks))
    return pl.concat(frames) if frames else pl.DataFrame(schema=SFT_SCHEMA)


def iteration_record_stream(sources: RecordSources, templates: PromptSet, cfg: BuildSFTConfig, iteration: str, *,
                            tasks: Tasks) -> Iterator[pl.DataFrame]:
    """`iteration_records` a frame at a time, in its order: the answer records, then the
    feedback records, then the refinement records (one pass over the sources each)."""
    if cfg.refinement_records == "rewrite" and not templates.has("refine"):
        raise ValueError(f"build_sft.refinement_records rewrite renders the refine template, which "
                         f"{templates.folder} does not have; use a preset with one (e.g. prompts/srt) or none")
    if cfg.answers == "kept":
        for kept in sources.kept():
            yield answer_records(kept, templates, cfg, iteration)
    else:
        for refinements, prompts, kept in sources.chains(True):
            yield answer_records(last_verified(kept, refinements, prompts, tasks=tasks), templates, cfg, iteration)
    if cfg.feedback_records:
        feedback_cfg = CriticRecordsConfig(**cfg.feedback)

        def feedback_records(examples: pl.DataFrame) -> pl.DataFrame:
            prompt = rendered(templates, "feedback", examples, prompt="prompt", response="response")
            return _records(examples.with_columns(_prompt=prompt), pl.format("{}/feedback", "id"), "_prompt",
                            "feedback", "feedback", "id", iteration)

        # two frames at a time (honing.artifacts.ahead), while the writer encodes the one before
        yield from ordered_map(feedback_records, example_stream(sources.round0(), feedback_cfg, tasks=tasks))
    if cfg.refinement_records == "rewrite":
        for refinements, prompts, _ in sources.chains(False):
            yield refinement_records(refinements, prompts, templates, iteration, tasks=tasks)


def _records(frame: pl.DataFrame, rid: pl.Expr, prompt: str, completion: str, kind: str, source: str,
             iteration: str) -> pl.DataFrame:
    """SFT records from columns: prompt → completion, one message each."""
    return frame.select(
        rid.alias("id"), messages("user", pl.col(prompt)).alias("prompt"),
        messages("assistant", pl.col(completion)).alias("completion"), pl.lit(kind, pl.String).alias("kind"),
        pl.col(source).alias("source_id"), pl.lit(iteration, pl.String).alias("iteration"),
    ).cast(SFT_SCHEMA)


def answer_records(answers: pl.DataFrame, templates: PromptSet, cfg: BuildSFTConfig, iteration: str) -> pl.DataFrame:
    """Prompt → answer, the first max_answers_per_prompt answers of each prompt (a
    frame of whole prompts, in order)."""
    first = (pl.col("prompt_id").is_first_distinct() if cfg.max_answers_per_prompt == 1  # the default; 10x faster
             else pl.int_range(pl.len()).over("prompt_id") < cfg.max_answers_per_prompt)
    answers = answers.filter(first)
    candidate = "candidate_id" if "candidate_id" in answers.columns else "id"  # a filtered row's id is its candidate's
    prompt = rendered(templates, "answer", answers, prompt="prompt")
    return _records(answers.with_columns(_prompt=prompt), pl.format("{}/answer", candidate), "_prompt", "response",
                    "answer", "id", iteration)


def _checked_chains(refinements: pl.DataFrame, prompts: pl.DataFrame, tasks: Tasks) -> pl.DataFrame:
    """The rows in chain order (candidate, round) with their rule check, `right`."""
    chains = refinements.sort("candidate_id", "round", maintain_order=True)
    read = tasks.rule_check(chains.get_column("response"), chains.get_column("prompt_id"), prompts)
    return chains.with_columns(right=read.get_column("correct"))


def last_verified(kept: pl.DataFrame, refinements: pl.DataFrame, prompts: pl.DataFrame, *,
                  tasks: Tasks) -> pl.DataFrame:
    """Per candidate, the last round of its chain that the rule check confirms (where
    the prompt has no reference: the filter's kept final answer); one row per distinct
    answer to a prompt, in candidate order. Columns id, candidate_id, prompt_id,
    prompt, response."""
    columns = ["id", "candidate_id", "prompt_id", "prompt", "response"]
    chains = _checked_chains(refinements, prompts, tasks).with_columns(
        _kept=pl.col("candidate_id").is_in(kept.get_column("id").implode()))
    chosen = (chains.filter(pl.col("right") | (pl.col("right").is_null() & pl.col("_kept")))
              .group_by("candidate_id", maintain_order=True).last())
    # a candidate chosen for want of a reference answers with the filter's row
    from_filter = chosen.filter(pl.col("right").is_null()).select(pl.col("candidate_id").alias("id"),
                                                                  pl.col("candidate_id").alias("_candidate"))
    filter_rows = (kept.join(from_filter, on="id", how="inner", maintain_order="left")
                   .select(pl.col("id"), pl.col("_candidate").alias("candidate_id"), "prompt_id", "prompt",
                           "response"))
    chosen = (chosen.join(filter_rows, on="candidate_id", how="left", maintain_order="left", suffix="_filter")
              .select(*[pl.when(pl.col("right").is_null()).then(pl.col(f"{c}_filter")).otherwise(pl.col(c)).alias(c)
                        if c != "candidate_id" else pl.col(c) for c in columns]))
    return chosen.filter(pl.struct("prompt_id", "response").is_first_distinct())


def refinement_records(refinements: pl.DataFrame, prompts: pl.DataFrame, templates: PromptSet, iteration: str, *,
                       tasks: Tasks) -> pl.DataFrame:
    """Refine template (the previous answer and its feedback) → the refined answer, for
    every chain step where the rule check says a wrong answer became right (EVOLVE's
    refinement data); the same step from two candidates is kept once."""
    chains = _checked_chains(refinements, prompts, tasks)
    previous = [pl.col(c).shift(1).over("candidate_id").alias(f"_previous_{c}") for c in ("response", "feedback",
                                                                                          "right")]
    steps = (chains.with_columns(previous)
             .filter((pl.col("_previous_right") == False) & (pl.col("right") == True))  # noqa: E712
             .filter(pl.struct("prompt_id", "_previous_response", "response").is_first_distinct()))
    prompt = rendered(templates, "refine", steps, prompt="prompt", response="_previous_response",
                      feedback="_previous_feedback")
    return _records(steps.with_columns(_prompt=prompt), pl.format("{}/refinement", "id"), "_prompt", "response",
                    "refinement", "id", iteration)
