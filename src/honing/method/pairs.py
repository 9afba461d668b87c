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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

from honing.method.prompts import PromptSet, assistant, user

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


def build_pairs(refinements: pl.DataFrame, prompts: pl.DataFrame, templates: PromptSet,
                cfg: PairsConfig, iteration: str, *, tasks: Tasks,
                values: Mapping[str, float | None] | None = None) -> pl.DataFrame:
    """`prompts`: the prompt rows (id, answer, task, metadata); `tasks`: their task
    families, whose rule check gives the `rule` signal; `values`: refinement row id ->
    its value by a computed signal (self_consistency, reward, judge: honing.method.signals)."""
    if cfg.signal not in SIGNALS:
        raise ValueError(f"build_pairs.signal must be one of {', '.join(SIGNALS)}, found {cfg.signal!r}")
    if cfg.signal in COMPUTED_SIGNALS and values is None:
        raise ValueError(f"build_pairs.signal {cfg.signal!r} needs each answer's value computed first (values=)")
    unknown = [rule for rule in cfg.pairs if rule not in PAIR_RULES]
    if unknown or not cfg.pairs:
        raise ValueError(f"build_pairs.pairs must list some of {', '.join(PAIR_RULES)}, found {list(cfg.pairs)!r}")
    by_id = {p["id"]: p for p in prompts.iter_rows(named=True)}
    by_prompt: dict[str, list[tuple[float, str, str]]] = {}
    texts: dict[str, str] = {}
    for r in refinements.iter_rows(named=True):
        value = signal_value(cfg.signal, tasks.verify(r["response"], by_id.get(r["prompt_id"])), r["score"],
                             (values or {}).get(r["id"]))
        if value is None:
            continue
        texts[r["prompt_id"]] = r["prompt"]
        by_prompt.setdefault(r["prompt_id"], []).append((value, r["id"], r["response"]))
    rows = []
    if "best_worst" in cfg.pairs:
        for pid, scored in by_prompt.items():
            # best first; ties broken by id so the output does not depend on input order
            ranked = sorted({resp: (v, i, resp) for v, i, resp in scored}.values(), key=lambda t: (-t[0], t[1]))
            for k in range(min(cfg.max_pairs_per_prompt, len(ranked) // 2)):
                best, worst = ranked[k], ranked[-1 - k]
                margin = best[0] - worst[0]
                if margin < cfg.min_margin or margin <= 0:
                    break
                rows.append(_pair(pid, texts[pid], best, worst, templates, iteration))
    if "refined_original" in cfg.pairs:
        have = {_answers(r) for r in rows}  # best_worst may have paired the same two answers already
        rows += [r for r in refined_original(refinements, by_id, templates, cfg, iteration, tasks=tasks)
                 if _answers(r) not in have]
    return pl.DataFrame(rows, schema=PAIR_SCHEMA)


def _answers(pair: dict) -> tuple[str, str, str]:
    return pair["prompt_id"], pair["chosen"][0]["content"], pair["rejected"][0]["content"]


def refined_original(refinements: pl.DataFrame, by_id: dict, templates: PromptSet, cfg: PairsConfig,
                     iteration: str, *, tasks: Tasks) -> list[dict]:
    """Pairs across rounds: a candidate's last refinement that the rule check says is
    right (chosen) against its original answer that it says is wrong (rejected)."""
    chains: dict[str, list[dict]] = {}
    for r in refinements.sort(["candidate_id", "round"]).iter_rows(named=True):
        chains.setdefault(r["candidate_id"], []).append(r)
    rows, per_prompt, seen = [], {}, set()
    for original, *refined in chains.values():
        pid, prompt = original["prompt_id"], by_id.get(original["prompt_id"])
        if original["round"] != 0 or tasks.verify(original["response"], prompt) is not False:
            continue
        right = [r for r in refined if tasks.verify(r["response"], prompt)]
        if not right or per_prompt.get(pid, 0) >= cfg.max_pairs_per_prompt:
            continue
        chosen = right[-1]
        if (pid, chosen["response"], original["response"]) in seen:  # the same pair from another candidate
            continue
        seen.add((pid, chosen["response"], original["response"]))
        per_prompt[pid] = per_prompt.get(pid, 0) + 1
        rows.append(_pair(pid, original["prompt"], (1.0, chosen["id"], chosen["response"]),
                          (0.0, original["id"], original["response"]), templates, iteration))
    return rows


def _pair(prompt_id: str, prompt: str, chosen: tuple[float, str, str], rejected: tuple[float, str, str],
          templates: PromptSet, iteration: str) -> dict:
    """A pair row from (score, row id, response) of the chosen and the rejected answer."""
    return {
        "id": f"{chosen[1]}>{rejected[1]}", "prompt_id": prompt_id,
        "prompt": [user(templates.answer(prompt))],
        "chosen": [assistant(chosen[2])], "rejected": [assistant(rejected[2])],
        "chosen_score": chosen[0], "rejected_score": rejected[0], "margin": chosen[0] - rejected[0],
        "iteration": iteration,
    }


MESSAGES = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))
PAIR_SCHEMA = {
    "id": pl.String, "prompt_id": pl.String, "prompt": MESSAGES, "chosen": MESSAGES,
    "rejected": MESSAGES, "chosen_score": pl.Float64, "rejected_score": pl.Float64,
    "margin": pl.Float64, "iteration": pl.String,
}
