"""filter: which final answers are good enough to learn from.

Rules, each optional, applied in order; a dropped row keeps the reason of the
first rule it fails (nothing is dropped silently), and the metrics count, per
rule, the rows it checked, kept and dropped:

    no_reference      drop answers to prompts without a reference (`require_reference`)
    incorrect         the rule check, where the prompt has a reference: its task family
                      verifies the answer (a reference answer, a gym task's own verifier)
    score             a minimum feedback score (the critic's 1-10)
    reward            a minimum reward model score (`honing.method.reward`)
    self_consistency  the answer agrees with the majority of its prompt's samples, and
                      the majority reaches `min_agreement` (`honing.method.signals`):
                      the correctness check of prompts without a reference
    length            length bounds
    duplicate         the same response to the same prompt is kept once

Every row also carries its final answer, its prompt's majority answer and
agreement (always computed: they cost nothing) and its reward (null without a
reward model).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

from honing.method.signals import auc, final_answers_of, votes

if TYPE_CHECKING:
    from honing.tasks.base import Tasks

RULES = ("no_reference", "incorrect", "score", "reward", "self_consistency", "length", "duplicate")


@dataclass(frozen=True)
class FilterConfig:
    require_correct: bool = True  # the rule check must pass where a reference answer exists
    require_reference: bool = False  # drop answers to prompts that have no reference
    min_score: int = 0  # 0 = no score threshold
    min_reward: float | None = None  # None = no reward threshold (the stage reads it from `reward_model`)
    self_consistency: bool = False  # keep only answers that agree with their prompt's majority
    min_agreement: float = 0.0  # ... and only where the majority holds at least this share of samples
    min_chars: int = 1
    max_chars: int = 8192
    dedupe: bool = True

    def __post_init__(self):
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ValueError(f"min_agreement must be a share of samples in [0, 1], found {self.min_agreement!r}")

    def rules(self) -> list[str]:
        """The rules this config applies, in order."""
        on = {"no_reference": self.require_reference, "incorrect": self.require_correct,
              "score": bool(self.min_score), "reward": self.min_reward is not None,
              "self_consistency": self.self_consistency, "length": True, "duplicate": self.dedupe}
        return [rule for rule in RULES if on[rule]]


def filter_answers(finals: pl.DataFrame, prompts: pl.DataFrame, cfg: FilterConfig, iteration: str, *,
                   tasks: Tasks, rewards: Mapping[str, float] | None = None) -> pl.DataFrame:
    """`finals`: the last round of each candidate (`final_answers`); `prompts`: the prompt
    rows (id, answer, task, metadata); `tasks`: their task families; `rewards`: a reward
    model's score of each row of `finals`, by its `id` (`honing.method.reward.reward_values`).

    Returns every row (schema `Filtered`) with `kept` and, when dropped, `reason`.
    """
    if cfg.min_reward is not None and rewards is None:
        raise ValueError("filter: min_reward is set but no reward model scored the answers")
    by_id = {p["id"]: p for p in prompts.iter_rows(named=True)}
    answers = final_answers_of(finals, prompts, tasks)
    by_prompt = votes(finals, answers)
    seen: set[tuple[str, str]] = set()
    rows = []
    for r, answer in zip(finals.iter_rows(named=True), answers, strict=True):
        prompt = by_id.get(r["prompt_id"])
        correct = tasks.verify(r["response"], prompt)
        vote = by_prompt[r["prompt_id"]]
        reward = None if rewards is None else rewards[r["id"]]
        reason = None
        if correct is None and cfg.require_reference:
            reason = "no_reference: the prompt has no reference answer"
        elif correct is False and cfg.require_correct:
            reason = (f"incorrect: final answer {tasks.final_answer(r['response'], prompt)!r} does not match "
                      f"the reference {prompt['answer']!r}")
        elif cfg.min_score and (r["score"] is None or r["score"] < cfg.min_score):
            reason = f"score: feedback score {r['score']} below {cfg.min_score}"
        elif cfg.min_reward is not None and reward < cfg.min_reward:
            reason = f"reward: reward {reward:.4f} below {cfg.min_reward}"
        elif cfg.self_consistency and vote.majority is None:
            reason = f"self_consistency: no majority answer among the prompt's {vote.samples} samples"
        elif cfg.self_consistency and answer != vote.majority:
            reason = f"self_consistency: final answer {answer!r} is not the majority's {vote.majority!r}"
        elif cfg.self_consistency and vote.agreement < cfg.min_agreement:
            reason = f"self_consistency: agreement {vote.agreement:.4f} below {cfg.min_agreement}"
        elif not cfg.min_chars <= len(r["response"]) <= cfg.max_chars:
            reason = f"length: {len(r['response'])} outside {cfg.min_chars}..{cfg.max_chars} characters"
        elif cfg.dedupe and (r["prompt_id"], r["response"]) in seen:
            reason = "duplicate: the same response to the same prompt is kept once"
        if reason is None:
            seen.add((r["prompt_id"], r["response"]))
        rows.append({
            "id": r["candidate_id"], "prompt_id": r["prompt_id"], "prompt": r["prompt"],
            "response": r["response"], "rounds": r["round"], "verdict": r["verdict"],
            "score": r["score"], "correct": correct, "final_answer": answer, "majority": vote.majority,
            "agreement": vote.agreement, "reward": reward, "kept": reason is None, "reason": reason,
            "iteration": iteration,
        })
    return pl.DataFrame(rows, schema={
        "id": pl.String, "prompt_id": pl.String, "prompt": pl.String, "response": pl.String,
        "rounds": pl.Int64, "verdict": pl.String, "score": pl.Int64, "correct": pl.Boolean,
        "final_answer": pl.String, "majority": pl.String, "agreement": pl.Float64, "reward": pl.Float64,
        "kept": pl.Boolean, "reason": pl.String, "iteration": pl.String,
    })


def filter_metrics(filtered: pl.DataFrame, cfg: FilterConfig) -> dict:
    """Rows kept and dropped, in all and per rule (in order: a rule checks what the
    rules before it kept), and what the signals measured where a reference can tell."""
    dropped = (filtered.filter(~pl.col("kept"))
               .with_columns(pl.col("reason").str.replace(r":.*", ""))  # the rule's name
               .group_by("reason").len().sort("reason"))
    dropped_by_rule = dict(zip(dropped["reason"].to_list(), dropped["len"].to_list(), strict=True))
    rules, checked = {}, filtered.height
    for rule in cfg.rules():
        out = dropped_by_rule.get(rule, 0)
        rules[rule] = {"checked": checked, "kept": checked - out, "dropped": out}
        checked -= out
    metrics = {
        "rows": filtered.height,
        "kept": int(filtered["kept"].sum()),
        "dropped": int((~filtered["kept"]).sum()),
        "dropped_by_rule": dropped_by_rule,
        "rules": rules,
        "correct_rate": round(float(filtered["correct"].drop_nulls().mean() or 0.0), 4),
        "self_consistency": self_consistency_metrics(filtered),
    }
    if filtered["reward"].null_count() < filtered.height:
        metrics["reward"] = reward_metrics(filtered)
    return metrics


def self_consistency_metrics(filtered: pl.DataFrame) -> dict:
    """Mean agreement, prompts with a majority, and how often the majority answer is
    right where the prompt has a reference (what self-consistency is worth here)."""
    per_prompt = filtered.group_by("prompt_id").agg(pl.col("majority").first(), pl.col("agreement").first())
    majority_rows = (filtered.filter(pl.col("final_answer") == pl.col("majority"))
                     .group_by("prompt_id").agg(pl.col("correct").first()))
    majority_correct = majority_rows["correct"].drop_nulls()
    return {
        "prompts": per_prompt.height,
        "with_majority": int(per_prompt["majority"].is_not_null().sum()),
        "mean_agreement": round(float(per_prompt["agreement"].mean() or 0.0), 4),
        "majority_correct_rate": round(float(majority_correct.mean()), 4) if majority_correct.len() else None,
    }


def reward_metrics(filtered: pl.DataFrame) -> dict:
    """The reward model's scores: mean, and how well they separate right from wrong
    answers (AUC) where a reference can tell."""
    checked = filtered.filter(pl.col("correct").is_not_null())
    separation = auc(checked["reward"].to_list(), checked["correct"].to_list())
    return {"mean": round(float(filtered["reward"].mean()), 4),
            "auc": None if separation is None else round(separation, 4)}


def final_answers(refinements: pl.DataFrame) -> pl.DataFrame:
    """The last round of each candidate (what filter and evaluation judge)."""
    return refinements.sort("round").group_by("candidate_id", maintain_order=True).last()
