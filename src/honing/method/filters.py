"""filter: which final answers are good enough to learn from.

Rules, each optional, applied in order; a dropped row keeps its reason (nothing
is dropped silently):
- the rule check, where the prompt has a reference: the prompt's task family
  verifies the answer (a reference answer, a reasoning-gym task's own verifier);
- a minimum feedback score (the critic's 1-10);
- length bounds;
- duplicates: the same response to the same prompt is kept once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from honing.tasks.base import Tasks


@dataclass(frozen=True)
class FilterConfig:
    require_correct: bool = True  # the rule check must pass where a reference answer exists
    require_reference: bool = False  # drop answers to prompts that have no reference
    min_score: int = 0  # 0 = no score threshold
    min_chars: int = 1
    max_chars: int = 8192
    dedupe: bool = True


def filter_answers(finals: pl.DataFrame, prompts: pl.DataFrame, cfg: FilterConfig,
                   iteration: str, *, tasks: Tasks) -> pl.DataFrame:
    """`finals`: the last round of each candidate (`refine.final_answers`); `prompts`:
    the prompt rows (id, answer, task, metadata); `tasks`: their task families.

    Returns every row (schema `Filtered`) with `kept` and, when dropped, `reason`.
    """
    by_id = {p["id"]: p for p in prompts.iter_rows(named=True)}
    seen: set[tuple[str, str]] = set()
    rows = []
    for r in finals.iter_rows(named=True):
        prompt = by_id.get(r["prompt_id"])
        correct = tasks.verify(r["response"], prompt)
        reason = None
        if correct is None and cfg.require_reference:
            reason = "no_reference: the prompt has no reference answer"
        elif correct is False and cfg.require_correct:
            reason = (f"incorrect: final answer {tasks.final_answer(r['response'], prompt)!r} does not match "
                      f"the reference {prompt['answer']!r}")
        elif cfg.min_score and (r["score"] is None or r["score"] < cfg.min_score):
            reason = f"score: feedback score {r['score']} below {cfg.min_score}"
        elif not cfg.min_chars <= len(r["response"]) <= cfg.max_chars:
            reason = f"length: {len(r['response'])} outside {cfg.min_chars}..{cfg.max_chars} characters"
        elif cfg.dedupe and (r["prompt_id"], r["response"]) in seen:
            reason = "duplicate: the same response to the same prompt is kept once"
        if reason is None:
            seen.add((r["prompt_id"], r["response"]))
        rows.append({
            "id": r["candidate_id"], "prompt_id": r["prompt_id"], "prompt": r["prompt"],
            "response": r["response"], "rounds": r["round"], "verdict": r["verdict"],
            "score": r["score"], "correct": correct, "kept": reason is None, "reason": reason,
            "iteration": iteration,
        })
    return pl.DataFrame(rows, schema={
        "id": pl.String, "prompt_id": pl.String, "prompt": pl.String, "response": pl.String,
        "rounds": pl.Int64, "verdict": pl.String, "score": pl.Int64, "correct": pl.Boolean,
        "kept": pl.Boolean, "reason": pl.String, "iteration": pl.String,
    })


def filter_metrics(filtered: pl.DataFrame) -> dict:
    reasons = (filtered.filter(~pl.col("kept"))
               .with_columns(pl.col("reason").str.replace(r":.*", ""))  # the rule's name
               .group_by("reason").len().sort("reason"))
    return {
        "rows": filtered.height,
        "kept": int(filtered["kept"].sum()),
        "dropped": int((~filtered["kept"]).sum()),
        "dropped_by_rule": dict(zip(reasons["reason"].to_list(), reasons["len"].to_list(), strict=True)),
        "correct_rate": round(float(filtered["correct"].drop_nulls().mean() or 0.0), 4),
    }


def final_answers(refinements: pl.DataFrame) -> pl.DataFrame:
    """The last round of each candidate (what filter and evaluation judge)."""
    return refinements.sort("round").group_by("candidate_id", maintain_order=True).last()
