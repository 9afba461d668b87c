"""evaluate: held-out accuracy, directly and with online self-refinement (SELF).

The model answers each held-out prompt greedily (round 0), critiques its own
answer and refines it for up to R rounds, in the same mode as the refine stage;
accuracy is measured by the prompt's rule check (its task family's) after every
round, so the gain per refinement round is visible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import polars as pl

from honing.calls.backends import SamplingParams
from honing.calls.roles import Role
from honing.method.critique import Critic, feedback_frame
from honing.method.generate import answer_requests, select_prompts
from honing.method.prompts import PromptSet
from honing.method.refine import RefineConfig, Splice, refine_rounds
from honing.method.signals import auc

if TYPE_CHECKING:
    from honing.tasks.base import Tasks


@dataclass(frozen=True)
class EvaluateConfig:
    # How online self-refinement runs: its rounds, mode (the stage takes refine.mode,
    # one setting for both) and max_tokens; `refine_rounds` runs it as in the refine stage.
    refine: RefineConfig = field(default_factory=RefineConfig)
    max_tokens: int = 96  # of the direct answers
    num_prompts: int = 0  # 0 = the whole evaluation split


def evaluate(prompts: pl.DataFrame, policy: Role, critic: Critic, templates: PromptSet,
             cfg: EvaluateConfig, name: str, *, tasks: Tasks,
             splice: Splice | None = None) -> tuple[pl.DataFrame, dict]:
    """Returns per-round rows (schema `EvaluationRows`) and the metrics dict.

    `tasks` checks the answers; `splice` is refine's (`refine_rounds`)."""
    prompts = select_prompts(prompts, cfg.num_prompts, seed=0)  # a subset stable as the pool grows
    texts = prompts["prompt"].to_list()
    rounds = cfg.refine.rounds
    greedy = SamplingParams(temperature=0.0, max_tokens=cfg.max_tokens)
    results = policy.call(answer_requests(texts, templates, greedy), "evaluation answers")
    answers = pl.DataFrame({
        "id": prompts["id"], "prompt_id": prompts["id"], "prompt": prompts["prompt"],
        "response": [r.text.strip() for r in results],
    })
    fb = feedback_frame(answers, critic, name).with_columns(prompt=answers["prompt"])
    refined = refine_rounds(fb, policy, critic, templates, cfg.refine, name, splice=splice)
    by_id = {p["id"]: p for p in prompts.iter_rows(named=True)}
    # carry each prompt's latest answer through every round, so round r is "after r rounds"
    latest: dict[str, dict] = {}
    rows = []
    by_round = {r: refined.filter(pl.col("round") == r) for r in range(rounds + 1)}
    for rnd in range(rounds + 1):
        for r in by_round[rnd].iter_rows(named=True):
            latest[r["prompt_id"]] = r
        for pid in prompts["id"].to_list():
            r = latest[pid]
            rows.append({"id": f"{pid}@{rnd}", "prompt_id": pid, "round": rnd, "response": r["response"],
                         "verdict": r["verdict"], "score": r.get("score"), "correct": bool(tasks.verify(r["response"], by_id[pid])),
                         "model": policy.model_id, "iteration": name})
    frame = pl.DataFrame(rows, schema={"id": pl.String, "prompt_id": pl.String, "round": pl.Int64,
                                       "response": pl.String, "verdict": pl.String, "score": pl.Int64,
                                       "correct": pl.Boolean,
                                       "model": pl.String, "iteration": pl.String})
    return frame, evaluation_metrics(frame, rounds)


def evaluation_metrics(frame: pl.DataFrame, rounds: int) -> dict:
    acc = [round(float(frame.filter(pl.col("round") == r)["correct"].mean()), 4) for r in range(rounds + 1)]
    first = frame.filter(pl.col("round") == 0).sort("prompt_id")
    last = frame.filter(pl.col("round") == rounds).sort("prompt_id")
    fixed = int((~first["correct"] & last["correct"]).sum())
    broken = int((first["correct"] & ~last["correct"]).sum())
    flagged = first["verdict"] == "incorrect"
    wrong = ~first["correct"]
    return {
        "prompts": first.height,
        "accuracy_direct": acc[0],
        "accuracy_refined": acc[-1],
        "refinement_gain": round(acc[-1] - acc[0], 4),
        "accuracy_per_round": acc,
        "fixed": fixed,
        "broken": broken,
        # the self-critic on its own direct answers
        "critic_recall_wrong": round(float((flagged & wrong).sum() / max(int(wrong.sum()), 1)), 4),
        "critic_false_alarm_rate": round(float((flagged & ~wrong).sum() / max(int((~wrong).sum()), 1)), 4),
        "unparsed_feedback": int((first["verdict"] == "unparsed").sum()),
        # how well its 1-10 score separates right from wrong direct answers (0.5: not at all)
        "critic_score_auc": score_auc(first),
    }


def score_auc(first: pl.DataFrame) -> float | None:
    """The AUC of the self-critic's score on the direct answers, right answers as the
    positives; None without a score column, scores, or both kinds of answer."""
    if "score" not in first.columns:
        return None
    scored = first.filter(pl.col("score").is_not_null())
    value = auc(scored["score"].cast(pl.Float64).to_list(), scored["correct"].to_list())
    return None if value is None else round(value, 4)
