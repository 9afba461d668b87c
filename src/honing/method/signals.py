"""signals: how good an answer is, for the filter and for preference pairs.

The signals build_pairs ranks a prompt's answers by (`build_pairs.signal`):

    rule              1 / 0 by the task family's rule check (needs a reference)
    score             the critic's 1-10 feedback score
    rule+score        the rule first, the score breaking ties
    self_consistency  1 if the answer agrees with the majority of the prompt's samples, else 0
    reward            a reward model's score of (prompt, answer)     honing.method.reward
    judge             the answer's wins in an LLM judge's pairwise    honing.method.judge
                      comparisons with the prompt's other answers

The first three are read off each row (`honing.method.pairs.signal_value`); the
last three (`pairs.COMPUTED_SIGNALS`) are computed over all rows first and handed
to `build_pairs` as `values` (row id -> value).

Self-consistency (Wang et al., 2023) needs no reference: the task family's
`final_answer` reads each sample's final answer; the answer most samples reach is
the majority, and the share of samples that reach it is the agreement. The vote is
over each candidate's final answer (its last refinement round), one vote per
sample. A tie for first place has no majority, and then no sample agrees with it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from honing.tasks.base import Tasks

@dataclass(frozen=True)
class Vote:
    majority: str | None  # the final answer most samples reach; None on a tie for first, or if none has one
    agreement: float  # the share of samples whose final answer is the majority (0.0 without a majority)
    samples: int


def majority_vote(answers: Sequence[str | None]) -> Vote:
    """The vote of one prompt's samples, given each sample's final answer (None: none found)."""
    counts = Counter(a for a in answers if a is not None).most_common()
    if not counts or (len(counts) > 1 and counts[0][1] == counts[1][1]):
        return Vote(None, 0.0, len(answers))
    majority, n = counts[0]
    return Vote(majority, n / len(answers), len(answers))


def final_answers_of(rows: pl.DataFrame, prompts: pl.DataFrame, tasks: Tasks) -> list[str | None]:
    """Each row's final answer (its task family's `final_answer`), in row order; None for
    a row whose prompt is unknown or whose response holds no final answer."""
    by_id = {p["id"]: p for p in prompts.iter_rows(named=True)}
    out = []
    for pid, response in zip(rows["prompt_id"].to_list(), rows["response"].to_list(), strict=True):
        prompt = by_id.get(pid)
        answer = None if prompt is None else tasks.final_answer(response, prompt)
        out.append(None if answer is None else answer.strip() or None)
    return out


def votes(samples: pl.DataFrame, answers: Sequence[str | None]) -> dict[str, Vote]:
    """Each prompt's vote over its samples (`samples`: one row per sample, with
    prompt_id; `answers`: their final answers, in row order)."""
    by_prompt: dict[str, list[str | None]] = {}
    for pid, answer in zip(samples["prompt_id"].to_list(), answers, strict=True):
        by_prompt.setdefault(pid, []).append(answer)
    return {pid: majority_vote(a) for pid, a in by_prompt.items()}


def self_consistency_values(refinements: pl.DataFrame, prompts: pl.DataFrame,
                            tasks: Tasks) -> dict[str, float | None]:
    """Row id -> 1.0 if the row's final answer is its prompt's majority, else 0.0; None
    where the prompt has no majority. Every round of every candidate gets a value; the
    vote is over each candidate's last round."""
    finals = refinements.sort("round").group_by("candidate_id", maintain_order=True).last()
    by_prompt = votes(finals, final_answers_of(finals, prompts, tasks))
    values: dict[str, float | None] = {}
    answers = final_answers_of(refinements, prompts, tasks)
    for rid, pid, answer in zip(refinements["id"].to_list(), refinements["prompt_id"].to_list(), answers,
                                strict=True):
        majority = by_prompt[pid].majority if pid in by_prompt else None
        values[rid] = None if majority is None else float(answer == majority)
    return values


def auc(values: Sequence[float], positive: Sequence[bool]) -> float | None:
    """The probability that a random positive row's value beats a random negative one's
    (ties count half): how well `values` separate right from wrong answers. None
    without both kinds."""
    pos = [v for v, p in zip(values, positive, strict=True) if p]
    neg = [v for v, p in zip(values, positive, strict=True) if not p]
    if not pos or not neg:
        return None
    # rank-sum form: O(n log n) instead of comparing every pair
    ranked = sorted([(v, 1) for v in pos] + [(v, 0) for v in neg], key=lambda t: t[0])
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        mean_rank = (i + 1 + j) / 2  # 1-based ranks i+1..j share their mean
        rank_sum += mean_rank * sum(t[1] for t in ranked[i:j])
        i = j
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))
