"""SFT records in TRL's conversational prompt/completion format.

- `meta_records`: the meta-skill corpus (SELF, SRT): prompt + response → feedback,
  and prompt → refinement.
- `iteration_records` (build_sft): the kept final answers, prompt → answer, and
  optionally the iteration's self-feedback that the rule check agrees with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

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
    feedback_records: bool = True  # self-feedback whose verdict the rule check confirms


def iteration_records(filtered: pl.DataFrame, refinements: pl.DataFrame, prompts: pl.DataFrame,
                      templates: PromptSet, cfg: BuildSFTConfig, iteration: str, *, tasks: Tasks) -> pl.DataFrame:
    """The kept answers, and the self-feedback whose verdict the prompt's rule check
    (its task family's) confirms."""
    rows, per_prompt = [], {}
    for r in filtered.filter(pl.col("kept")).iter_rows(named=True):
        if per_prompt.get(r["prompt_id"], 0) >= cfg.max_answers_per_prompt:
            continue
        per_prompt[r["prompt_id"]] = per_prompt.get(r["prompt_id"], 0) + 1
        rows.append(_record(f"{r['id']}/answer", templates.answer(r["prompt"]), r["response"],
                            "answer", r["id"], iteration))
    if cfg.feedback_records:
        by_id = {p["id"]: p for p in prompts.iter_rows(named=True)}
        for r in refinements.filter(pl.col("round") == 0).iter_rows(named=True):
            ok = tasks.verify(r["response"], by_id.get(r["prompt_id"]))
            if ok is None or r["verdict"] == "unparsed" or (r["verdict"] == "correct") != ok:
                continue
            rows.append(_record(f"{r['id']}/feedback", templates.feedback(r["prompt"], r["response"]),
                                r["feedback"], "feedback", r["id"], iteration))
    return pl.DataFrame(rows, schema=SFT_SCHEMA)
