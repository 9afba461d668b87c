"""The self-critic's training records in each iteration: right feedback, balanced.

SELF keeps the meta-skill alive during self-evolution by training on feedback as
well as answers. Trained only on its own unchecked feedback, the critic falls
behind its policy: as answers get better, almost every record says "correct",
and what it says about the few wrong answers may itself be wrong. So, for the
answers an iteration produced (round 0 of refine, samples and greedy alike):

- right feedback only. `source: checker` takes the feedback of the task family's
  step checker (the strong critic, e.g. the micro world's rule oracle), right by
  construction; `source: verified` keeps the self-feedback whose verdict the rule
  check confirms (for families without a step checker), and where a checker
  exists, only self-feedback equal to the checker's;
- right and wrong answers in balanced proportion: every record of the rarer
  kind, and at most `balance` times as many of the other (chosen by a seeded
  hash of the answer's id, so the choice does not depend on row order);
- `noise_critiques` checks of balanced-noise answers (each step wrong with
  probability `noise_p_wrong`, independent of carries), as in the meta corpus,
  so the check itself stays sharp where the policy's own mistakes are rare.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import polars as pl

from honing.method.prompts import PromptSet

if TYPE_CHECKING:
    from honing.tasks.base import Tasks

SOURCES = ("verified", "checker")


@dataclass(frozen=True)
class CriticRecordsConfig:
    source: str = "verified"
    balance: float = 0.0  # at most this many records of the commoner kind per rarer one; 0: no balancing
    noise_critiques: int = 0
    noise_p_wrong: float = 0.5
    seed: int = 0

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"feedback source must be one of {', '.join(SOURCES)}, found {self.source!r}")
        if self.balance < 0 or self.noise_critiques < 0:
            raise ValueError("balance and noise_critiques must be >= 0")


@dataclass(frozen=True)
class FeedbackExample:
    """One (prompt, answer) -> feedback record, with whether the answer is right."""

    id: str
    prompt: str
    response: str
    feedback: str
    right_answer: bool


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def answer_feedback(rows: pl.DataFrame, prompts: Mapping[str, Mapping[str, Any]], cfg: CriticRecordsConfig,
                    *, tasks: Tasks) -> list[FeedbackExample]:
    """Right feedback on the iteration's own answers (`rows`: refine's round 0)."""
    out = []
    for r in rows.iter_rows(named=True):
        prompt_row = prompts.get(r["prompt_id"])
        right = tasks.verify(r["response"], prompt_row)
        if right is None or r["verdict"] == "unparsed":
            continue
        check = tasks.family(prompt_row).check
        if check is not None:  # a strong critic exists: right feedback is its feedback
            strong, _ = check(r["prompt"], r["response"])
            if cfg.source == "verified" and r["feedback"] != strong:
                continue
            text = strong
        else:
            if (r["verdict"] == "correct") != right:
                continue
            text = r["feedback"]
        out.append(FeedbackExample(r["id"], r["prompt"], r["response"], text, bool(right)))
    return out


def balanced(examples: list[FeedbackExample], balance: float, seed: int) -> list[FeedbackExample]:
    """All of the rarer kind (right or wrong answers), at most `balance` x as many of
    the other, picked by a seeded hash of the id; order as given."""
    if not balance:
        return examples
    right = [e for e in examples if e.right_answer]
    wrong = [e for e in examples if not e.right_answer]
    rare, common = (right, wrong) if len(right) <= len(wrong) else (wrong, right)
    keep = int(balance * len(rare))
    chosen = {e.id for e in sorted(common, key=lambda e: _rank(seed, e.id))[:keep]}
    return [e for e in examples if e in rare or e.id in chosen]


def noise_feedback(prompts: list[Mapping[str, Any]], cfg: CriticRecordsConfig, *,
                   tasks: Tasks) -> list[FeedbackExample]:
    """Checks of balanced-noise answers to the prompts (families with a checker and a
    noise writer), round-robin over the prompts."""
    usable = [p for p in prompts if tasks.family(p).check is not None and tasks.noisy_answer(p) is not None]
    if not usable or not cfg.noise_critiques:
        return []
    rng = random.Random(cfg.seed)
    out = []
    for k in range(cfg.noise_critiques):
        p = usable[k % len(usable)]
        response = tasks.noisy_answer(p)(rng, cfg.noise_p_wrong)
        text, parsed = tasks.family(p).check(p["prompt"], response)
        out.append(FeedbackExample(f"{p['id']}:noise{k // len(usable)}", p["prompt"], response, text,
                                   parsed.verdict == "correct"))
    return out


def critic_records(round0: pl.DataFrame, prompts: pl.DataFrame, templates: PromptSet, cfg: CriticRecordsConfig,
                   *, tasks: Tasks) -> list[tuple[str, str, str, str]]:
    """(record id, feedback prompt, feedback, source id) for the self-critic's SFT records."""
    by_id = {p["id"]: p for p in prompts.iter_rows(named=True)}
    own = balanced(answer_feedback(round0, by_id, cfg, tasks=tasks), cfg.balance, cfg.seed)
    seen = list(dict.fromkeys(round0["prompt_id"].to_list()))
    noise = noise_feedback([by_id[p] for p in seen if p in by_id], cfg, tasks=tasks)
    return [(f"{e.id}/feedback", templates.feedback(e.prompt, e.response), e.feedback, e.id) for e in own + noise]
