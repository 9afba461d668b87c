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
`vote_frame` counts the votes of many prompts at once (group-bys, no Python loop);
`majority_vote` is the same rule for one prompt's answers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

from honing.tasks.base import PY_SPACE

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


def voted_answer(answer: pl.Expr) -> pl.Expr:
    """A family's final answer as the vote counts it: stripped as str.strip() does,
    null when empty or none."""
    stripped = answer.str.strip_chars(PY_SPACE)
    return pl.when(stripped != "").then(stripped)


def final_answers_of(rows: pl.DataFrame, prompts: pl.DataFrame, tasks: Tasks) -> pl.Series:
    """Each row's final answer (its task family's `final_answer`, as the vote counts
    it), in row order; null for a row whose prompt is unknown or whose response holds
    no final answer."""
    read = tasks.rule_check(rows.get_column("response"), rows.get_column("prompt_id"), prompts)
    return read.select(voted_answer(pl.col("final_answer"))).to_series()


def vote_frame(samples: pl.DataFrame, answer: str = "final_answer") -> pl.DataFrame:
    """Each prompt's vote over its samples (one row per sample: prompt_id and its final
    answer): prompt_id, majority (null on a tie for first or without answers), agreement
    and samples, one row per prompt (no order). Plain aggregations only: filters inside
    a group-by's aggregation ran group by group, 2x slower."""
    counts = samples.group_by("prompt_id", answer).len("votes")  # null answers count as samples, not votes
    totals = counts.group_by("prompt_id").agg(pl.col("votes").sum().alias("samples"))
    voted = counts.filter(pl.col(answer).is_not_null())
    firsts = (voted.filter(pl.col("votes") == pl.col("votes").max().over("prompt_id"))
              .group_by("prompt_id").agg(pl.len().alias("firsts"), pl.col("votes").first().alias("top"),
                                         pl.col(answer).first().alias("majority")))
    won = pl.col("firsts") == 1
    return totals.join(firsts, on="prompt_id", how="left").select(
        "prompt_id", pl.when(won).then(pl.col("majority")).alias("majority"),
        pl.when(won).then(pl.col("top") / pl.col("samples")).otherwise(0.0).alias("agreement"),
        pl.col("samples").cast(pl.Int64))


def final_rounds(refinements: pl.DataFrame, *, first_round: str | None = None) -> pl.DataFrame:
    """The last round of each candidate, in the order of the candidates' first rounds
    (candidate_id first, then the other columns); `first_round`: also a column of that
    name, the candidate's first round."""
    candidate, rounds = pl.col("candidate_id"), pl.col("round")
    starts = candidate.ne_missing(candidate.shift(1))
    if refinements.height and refinements.get_column("candidate_id").is_sorted() and refinements.select(
            (starts | (rounds > rounds.shift(1)).fill_null(False)).all()).item():
        # chains in order, as refine writes them (rounds rising along each candidate's run of
        # rows): each run's last row, no sort and group-by over the strings (3x faster)
        name = first_round or "_first_round"
        finals = (refinements.with_columns(pl.when(starts).then(rounds).forward_fill().alias(name))
                  .filter(candidate.ne_missing(candidate.shift(-1))))
        if finals.get_column(name).max() > 0:  # chains without a round 0 come later
            finals = finals.sort(name, maintain_order=True)
        finals = finals if first_round else finals.drop(name)
        return finals.select("candidate_id", pl.exclude("candidate_id"))
    if first_round:
        refinements = refinements.with_columns(rounds.min().over("candidate_id").alias(first_round))
    return refinements.sort("round", maintain_order=True).group_by("candidate_id", maintain_order=True).last()


def self_consistency_column(refinements: pl.DataFrame, prompts: pl.DataFrame, tasks: Tasks) -> pl.Series:
    """Each row's self-consistency value, in row order: 1.0 if its final answer is its
    prompt's majority, else 0.0; null where the prompt has no majority. The vote is
    over each candidate's last round; `refinements` holds whole prompts."""
    finals = final_rounds(refinements.select("candidate_id", "prompt_id", "round", "response"))
    vote = vote_frame(finals.with_columns(final_answer=final_answers_of(finals, prompts, tasks)))
    answers = refinements.select("prompt_id").with_columns(answer=final_answers_of(refinements, prompts, tasks))
    return (answers.join(vote, on="prompt_id", how="left", maintain_order="left")
            .select(pl.when(pl.col("majority").is_not_null())
                    .then(pl.col("answer").eq_missing(pl.col("majority")).cast(pl.Float64)))
            .to_series().alias("self_consistency"))


def self_consistency_values(refinements: pl.DataFrame, prompts: pl.DataFrame,
                            tasks: Tasks) -> dict[str, float | None]:
    """Row id -> 1.0 if the row's final answer is its prompt's majority, else 0.0; None
    where the prompt has no majority. Every round of every candidate gets a value; the
    vote is over each candidate's last round."""
    column = self_consistency_column(refinements, prompts, tasks)
    return dict(zip(refinements.get_column("id").to_list(), column.to_list(), strict=True))


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
