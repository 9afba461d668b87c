"""build_pairs: preference pairs from the model's own answers and refinements.

For each prompt, every answer the iteration produced (all samples, all refinement
rounds) is scored by the chosen signal; chosen = the best, rejected = the worst,
kept only if the margin reaches `min_margin` (SRT, EVOLVE). The pair is written in
TRL's conversational prompt/chosen/rejected format.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

from honing.method.prompts import PromptSet, assistant, user

if TYPE_CHECKING:
    from honing.tasks.base import Tasks

SIGNALS = ("rule", "score", "rule+score")


@dataclass(frozen=True)
class PairsConfig:
    signal: str = "rule"  # rule: 1/0 by the task's rule check; score: the critic's 1-10
    min_margin: float = 1.0
    max_pairs_per_prompt: int = 1


def signal_value(signal: str, correct: bool | None, score: int | None) -> float | None:
    if signal == "rule":
        return None if correct is None else float(correct)
    if signal == "score":
        return None if score is None else float(score)
    # rule+score: correctness first, the critic's score breaks ties
    if correct is None:
        return None
    return float(correct) * 10 + (score or 0) / 10


def build_pairs(refinements: pl.DataFrame, prompts: pl.DataFrame, templates: PromptSet,
                cfg: PairsConfig, iteration: str, *, tasks: Tasks) -> pl.DataFrame:
    """`prompts`: the prompt rows (id, answer, task, metadata); `tasks`: their task
    families, whose rule check gives the `rule` signal."""
    if cfg.signal not in SIGNALS:
        raise ValueError(f"build_pairs.signal must be one of {', '.join(SIGNALS)}, found {cfg.signal!r}")
    by_id = {p["id"]: p for p in prompts.iter_rows(named=True)}
    by_prompt: dict[str, list[tuple[float, str, str]]] = {}
    texts: dict[str, str] = {}
    for r in refinements.iter_rows(named=True):
        value = signal_value(cfg.signal, tasks.verify(r["response"], by_id.get(r["prompt_id"])), r["score"])
        if value is None:
            continue
        texts[r["prompt_id"]] = r["prompt"]
        by_prompt.setdefault(r["prompt_id"], []).append((value, r["id"], r["response"]))
    rows = []
    for pid, scored in by_prompt.items():
        # best first; ties broken by id so the output does not depend on input order
        ranked = sorted({resp: (v, i, resp) for v, i, resp in scored}.values(), key=lambda t: (-t[0], t[1]))
        for k in range(min(cfg.max_pairs_per_prompt, len(ranked) // 2)):
            best, worst = ranked[k], ranked[-1 - k]
            margin = best[0] - worst[0]
            if margin < cfg.min_margin or margin <= 0:
                break
            rows.append({
                "id": f"{best[1]}>{worst[1]}", "prompt_id": pid,
                "prompt": [user(templates.answer(texts[pid]))],
                "chosen": [assistant(best[2])], "rejected": [assistant(worst[2])],
                "chosen_score": best[0], "rejected_score": worst[0], "margin": margin,
                "iteration": iteration,
            })
    return pl.DataFrame(rows, schema=PAIR_SCHEMA)


MESSAGES = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))
PAIR_SCHEMA = {
    "id": pl.String, "prompt_id": pl.String, "prompt": MESSAGES, "chosen": MESSAGES,
    "rejected": MESSAGES, "chosen_score": pl.Float64, "rejected_score": pl.Float64,
    "margin": pl.Float64, "iteration": pl.String,
}
