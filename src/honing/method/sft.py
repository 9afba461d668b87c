"""SFT records in TRL's conversational prompt/completion format.

- `meta_records`: the meta-skill corpus (SELF, SRT): prompt + response → feedback,
  and prompt → refinement.
- `iteration_records` (build_sft): the kept final answers, prompt → answer, and
  the self-critic's records: right feedback on its answers, balanced (critic_data).
"""

from __future__ import annotations

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
    rows, seen = [], set()
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
            rows.append(_record(f"{r['prompt_id']}/refinement", templates.answer(r["prompt"]),
                                r["refinement"], "refinement", r["id"], iteration))
    return pl.DataFrame(rows, schema=SFT_SCHEMA)


@dataclass(frozen=True)
class BuildSFTConfig:
    max_answers_per_prompt: int = 1
    feedback_records: bool = True  # the self-critic's records (see honing.method.critic_data)
    feedback: Mapping[str, Any] = field(default_factory=dict)  # CriticRecordsConfig fields


def iteration_records(filtered: pl.DataFrame, refinements: pl.DataFrame, prompts: pl.DataFrame,
                      templates: PromptSet, cfg: BuildSFTConfig, iteration: str, *, tasks: Tasks) -> pl.DataFrame:
    """The kept answers, and the self-critic's records: right feedback on the
    iteration's answers, balanced (`honing.method.critic_data`)."""
    rows, per_prompt = [], {}
    for r in filtered.filter(pl.col("kept")).iter_rows(named=True):
        if per_prompt.get(r["prompt_id"], 0) >= cfg.max_answers_per_prompt:
            continue
        per_prompt[r["prompt_id"]] = per_prompt.get(r["prompt_id"], 0) + 1
        rows.append(_record(f"{r['id']}/answer", templates.answer(r["prompt"]), r["response"],
                            "answer", r["id"], iteration))
    if cfg.feedback_records:
        feedback_cfg = CriticRecordsConfig(**cfg.feedback)
        round0 = refinements.filter(pl.col("round") == 0)
        for rid, prompt, feedback, source in critic_records(round0, prompts, templates, feedback_cfg, tasks=tasks):
            rows.append(_record(rid, prompt, feedback, "feedback", source, iteration))
    return pl.DataFrame(rows, schema=SFT_SCHEMA)
