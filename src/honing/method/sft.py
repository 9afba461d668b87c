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
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import polars as pl

from honing.method.critic_data import CriticRecordsConfig, critic_records
from honing.method.pairs import MESSAGES
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


def iteration_records(filtered: pl.DataFrame, refinements: pl.DataFrame, prompts: pl.DataFrame,
                      templates: PromptSet, cfg: BuildSFTConfig, iteration: str, *, tasks: Tasks) -> pl.DataFrame:
    """The answers (`cfg.answers`), the self-critic's records: right feedback on the
    iteration's answers, balanced (`honing.method.critic_data`), and (`refinement_records`)
    the chains' verified refinement steps."""
    if cfg.refinement_records == "rewrite" and not templates.has("refine"):
        raise ValueError(f"build_sft.refinement_records rewrite renders the refine template, which "
                         f"{templates.folder} does not have; use a preset with one (e.g. prompts/srt) or none")
    by_id = {p["id"]: p for p in prompts.iter_rows(named=True)}
    rows, per_prompt = [], {}
    answers = (filtered.filter(pl.col("kept")).iter_rows(named=True) if cfg.answers == "kept"
               else last_verified(filtered, refinements, by_id, tasks=tasks))
    for r in answers:
        if per_prompt.get(r["prompt_id"], 0) >= cfg.max_answers_per_prompt:
            continue
        per_prompt[r["prompt_id"]] = per_prompt.get(r["prompt_id"], 0) + 1
        candidate = r.get("candidate_id", r["id"])  # a filtered row's id is its candidate's
        rows.append(_record(f"{candidate}/answer", templates.answer(r["prompt"]), r["response"],
                            "answer", r["id"], iteration))
    if cfg.feedback_records:
        feedback_cfg = CriticRecordsConfig(**cfg.feedback)
        round0 = refinements.filter(pl.col("round") == 0)
        for rid, prompt, feedback, source in critic_records(round0, prompts, templates, feedback_cfg, tasks=tasks):
            rows.append(_record(rid, prompt, feedback, "feedback", source, iteration))
    if cfg.refinement_records == "rewrite":
        rows += refinement_records(refinements, by_id, templates, iteration, tasks=tasks)
    return pl.DataFrame(rows, schema=SFT_SCHEMA)


def last_verified(filtered: pl.DataFrame, refinements: pl.DataFrame, by_id: dict, *, tasks: Tasks) -> list[dict]:
    """Per candidate, the last round of its chain that the rule check confirms (where
    the prompt has no reference: the filter's kept final answer); one row per distinct
    answer to a prompt, in candidate order."""
    kept = {r["id"]: r for r in filtered.filter(pl.col("kept")).iter_rows(named=True)}
    chosen: dict[str, dict] = {}
    for r in refinements.sort(["candidate_id", "round"]).iter_rows(named=True):
        right = tasks.verify(r["response"], by_id.get(r["prompt_id"]))
        if right:
            chosen[r["candidate_id"]] = r
        elif right is None and r["candidate_id"] in kept:
            chosen[r["candidate_id"]] = {**kept[r["candidate_id"]], "candidate_id": r["candidate_id"]}
    seen, out = set(), []
    for r in chosen.values():
        if (r["prompt_id"], r["response"]) not in seen:
            seen.add((r["prompt_id"], r["response"]))
            out.append(r)
    return out


def refinement_records(refinements: pl.DataFrame, by_id: dict, templates: PromptSet, iteration: str, *,
                       tasks: Tasks) -> list[dict]:
    """Refine template (the previous answer and its feedback) → the refined answer, for
    every chain step where the rule check says a wrong answer became right (EVOLVE's
    refinement data); the same step from two candidates is kept once."""
    rows, seen, prev = [], set(), None
    for r in refinements.sort(["candidate_id", "round"]).iter_rows(named=True):
        if prev is not None and prev["candidate_id"] == r["candidate_id"]:
            prompt = by_id.get(r["prompt_id"])
            key = (r["prompt_id"], prev["response"], r["response"])
            if key not in seen and tasks.verify(prev["response"], prompt) is False \
                    and tasks.verify(r["response"], prompt) is True:
                seen.add(key)
                rows.append(_record(f"{r['id']}/refinement", templates.refine(r["prompt"], prev["response"],
                                                                              prev["feedback"]),
                                    r["response"], "refinement", r["id"], iteration))
        prev = r
    return rows
