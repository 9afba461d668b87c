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

The rules are one polars query over a frame of final answers: the rule check is
the task family's vectorized rule where it has one, the vote and the duplicates
are group-bys and windows over prompts. So the filter runs on any frame that holds
whole prompts: `filter_answers` on all answers at once, `filter_stream` on a
stream of such frames (a pool of millions of answers in flat memory), with the same
rows; `FilterTally` counts the metrics as the frames pass.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import polars as pl

from honing.artifacts.ahead import WORKERS, ordered_map
from honing.method.repeats import repeats
from honing.method.signals import auc, final_rounds, vote_frame, voted_answer

if TYPE_CHECKING:
    from honing.tasks.base import Tasks

RULES = ("no_reference", "incorrect", "score", "reward", "self_consistency", "length", "duplicate")
FINALS_COLUMNS = ("id", "candidate_id", "prompt_id", "prompt", "round", "response", "verdict", "score")
FILTERED_SCHEMA = {
    "id": pl.String, "prompt_id": pl.String, "prompt": pl.String, "response": pl.String,
    "rounds": pl.Int64, "verdict": pl.String, "score": pl.Int64, "correct": pl.Boolean,
    "final_answer": pl.String, "majority": pl.String, "agreement": pl.Float64, "reward": pl.Float64,
    "kept": pl.Boolean, "reason": pl.String, "iteration": pl.String,
}


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


def finals_columns(scored: bool) -> tuple[str, ...]:
    """The refinement columns the filter reads: a row's own id only names it to a
    reward model (`scored`)."""
    return FINALS_COLUMNS if scored else FINALS_COLUMNS[1:]


def filter_answers(finals: pl.DataFrame, prompts: pl.DataFrame, cfg: FilterConfig, iteration: str, *,
                   tasks: Tasks, rewards: Mapping[str, float] | None = None) -> pl.DataFrame:
    """`finals`: the last round of each candidate (`final_answers`); `prompts`: the prompt
    rows (id, answer, task, metadata); `tasks`: their task families; `rewards`: a reward
    model's score of each row of `finals`, by its `id` (`honing.method.reward.reward_values`).

    Returns every row (schema `Filtered`) with `kept` and, when dropped, `reason`.
    """
    if cfg.min_reward is not None and rewards is None:
        raise ValueError("filter: min_reward is set but no reward model scored the answers")
    return decide(finals, prompts, cfg, iteration, tasks=tasks, rewards=rewards)


def filter_stream(chunks: Iterable[tuple[pl.DataFrame, pl.DataFrame]], cfg: FilterConfig, iteration: str, *,
                  tasks: Tasks, reward: Callable[[pl.DataFrame], Mapping[str, float]] | None = None,
                  ) -> Iterator[pl.DataFrame]:
    """The filter over a stream of (refinements of whole prompts, their prompt rows):
    the rows `filter_answers(final_answers(all refinements), ...)` gives, a frame at a
    time, in its order. `reward`: scores a frame of final answers (id -> reward)."""
    if cfg.min_reward is not None and reward is None:
        raise ValueError("filter: min_reward is set but no reward model scored the answers")
    # The finals' order is their candidates' first rounds': a candidate with no round 0
    # (not one refine writes) comes after every candidate that has one, wherever its
    # prompt is, so such rows wait for the end.
    def numbered() -> Iterator[tuple[pl.DataFrame, pl.DataFrame, int]]:  # each frame with its first row's position
        offset = 0
        for refinements, prompts in chunks:
            yield refinements, prompts, offset
            offset += refinements.height

    columns = finals_columns(reward is not None)

    def filtered(chunk: tuple[pl.DataFrame, pl.DataFrame, int]) -> tuple[pl.DataFrame, pl.DataFrame]:
        refinements, prompts, offset = chunk
        finals = final_rounds(refinements.select(*columns).with_row_index("_position", offset),
                              first_round="_first")
        return finals, decide(finals, prompts, cfg, iteration, tasks=tasks, rewards=reward and reward(finals))

    late = []
    # frames are filtered two at a time, but a reward model scores one frame at a time
    for finals, out in ordered_map(filtered, numbered(), workers=1 if reward else WORKERS):
        waiting = finals.get_column("_first") > 0
        if waiting.any():
            keys = finals.select("_first", pl.col("_position").min().over("candidate_id"))
            late.append(pl.concat([out, keys], how="horizontal").filter(waiting))
            out = out.filter(~waiting)
        yield out
    if late:
        yield pl.concat(late).sort("_first", "_position").drop("_first", "_position")


def decide(finals: pl.DataFrame, prompts: pl.DataFrame, cfg: FilterConfig, iteration: str, *, tasks: Tasks,
           rewards: Mapping[str, float] | None) -> pl.DataFrame:
    """The rules over a frame of final answers that holds whole prompts (in the
    order the duplicate rule reads them)."""
    read = tasks.rule_check(finals.get_column("response"), finals.get_column("prompt_id"), prompts)
    reference = read.get_column("answer")  # the prompt's reference, as the check read it
    frame = finals.select(  # a filtered row's id is its candidate's
        pl.col("candidate_id").alias("id"), "prompt_id", "prompt", "response", pl.col("round").alias("rounds"),
        "verdict", pl.col("score").cast(pl.Int64), read.get_column("correct"),
        read.get_column("final_answer").alias("_read"), reference.alias("_reference"),
        **({} if rewards is None else {"reward": _rewards(finals, rewards)}),
    ).with_columns(voted_answer(pl.col("_read")).alias("final_answer"))
    votes = vote_frame(frame.select("prompt_id", "final_answer"))
    frame = frame.join(votes, on="prompt_id", how="left", maintain_order="left")
    if rewards is None:
        frame = frame.with_columns(reward=pl.lit(None, pl.Float64))
    frame = frame.lazy().with_columns(reason=_reasons(cfg)).collect()  # lazy: each subexpression computed once
    if cfg.dedupe:  # the same response to the same prompt: kept the first time it passes every other rule
        repeat = repeats(frame, "prompt_id", "response", among=pl.col("reason").is_null())
        frame = frame.with_columns(reason=pl.when(repeat).then(
            pl.lit("duplicate: the same response to the same prompt is kept once")).otherwise(pl.col("reason")))
    return frame.select(
        pl.col("id"), "prompt_id", "prompt", "response", "rounds", "verdict", "score", "correct", "final_answer",
        "majority", pl.col("agreement").fill_null(0.0), "reward", pl.col("reason").is_null().alias("kept"),
        "reason", pl.lit(iteration, pl.String).alias("iteration"),
    ).cast(FILTERED_SCHEMA)


def _reasons(cfg: FilterConfig) -> pl.Expr:
    """The first rule each row fails, in words (null: it passes all but the duplicate rule)."""
    correct, score, reward = pl.col("correct"), pl.col("score"), pl.col("reward")
    majority, agreement, length = pl.col("majority"), pl.col("agreement"), pl.col("response").str.len_chars()
    steps: list[tuple[pl.Expr, pl.Expr]] = []
    if cfg.require_reference:
        steps.append((correct.is_null(), pl.lit("no_reference: the prompt has no reference answer")))
    if cfg.require_correct:
        steps.append((correct.not_(), _text("incorrect: final answer ", _repr(pl.col("_read")),
                                            " does not match the reference ", _repr(pl.col("_reference")))))
    if cfg.min_score:
        steps.append((score.is_null() | (score < cfg.min_score),
                      _text("score: feedback score ", score.cast(pl.String).fill_null("None"),
                            f" below {cfg.min_score}")))
    if cfg.min_reward is not None:
        steps.append((reward < cfg.min_reward,
                      _text("reward: reward ", _python(lambda v: f"{v:.4f}", reward), f" below {cfg.min_reward}")))
    if cfg.self_consistency:
        steps += [
            (majority.is_null(), _text("self_consistency: no majority answer among the prompt's ",
                                       pl.col("samples").cast(pl.String), " samples")),
            (pl.col("final_answer").ne_missing(majority),
             _text("self_consistency: final answer ", _repr(pl.col("final_answer")), " is not the majority's ",
                   _repr(majority))),
            (agreement < cfg.min_agreement,
             _text("self_consistency: agreement ", _python(lambda v: f"{v:.4f}", agreement),
                   f" below {cfg.min_agreement}")),
        ]
    steps.append((~length.is_between(cfg.min_chars, cfg.max_chars),
                  _text("length: ", length.cast(pl.String), f" outside {cfg.min_chars}..{cfg.max_chars} characters")))
    reason = pl.lit(None, pl.String)
    for failed, text in reversed(steps):
        reason = pl.when(failed).then(text).otherwise(reason)
    return reason


def _text(*parts: pl.Expr | str) -> pl.Expr:
    return pl.concat_str([pl.lit(p) if isinstance(p, str) else p for p in parts])


def _python(format: Callable[[Any], str], expr: pl.Expr) -> pl.Expr:
    """`format` (a Python formatter: repr, f"{v:.4f}") of each value, called once per
    distinct value of the frame; "None" for null, as an f-string writes it."""
    def apply(values: pl.Series) -> pl.Series:
        distinct = values.drop_nulls().unique()
        written = pl.Series([format(v) for v in distinct.to_list()], dtype=pl.String)
        return values.replace_strict(distinct, written, default=None, return_dtype=pl.String).fill_null("None")
    return expr.map_batches(apply, return_dtype=pl.String, is_elementwise=True)


_PLAIN = r"^[\x20-\x26\x28-\x5b\x5d-\x7e]*$"  # printable ASCII but ' and \: repr only adds quotes


def _repr(expr: pl.Expr) -> pl.Expr:
    """repr() of each string: quoted in polars where that is all repr does (most
    answers), by Python for the rest."""
    plain = expr.str.contains(_PLAIN)
    return (pl.when(plain).then(pl.concat_str([pl.lit("'"), expr, pl.lit("'")]))
            .otherwise(_python(repr, pl.when(plain.not_()).then(expr))))


def _rewards(finals: pl.DataFrame, rewards: Mapping[str, float]) -> pl.Series:
    ids = finals.get_column("id").to_list()
    missing = [i for i in ids if i not in rewards]
    if missing:
        raise ValueError(f"filter: the reward model scored no answer {missing[0]!r} ({len(missing)} without a reward)")
    return pl.Series([rewards[i] for i in ids], dtype=pl.Float64)


class FilterTally:
    """`filter_metrics`, counted as filtered frames pass (each holding whole prompts):
    `add` each frame (it is returned unchanged), then read `metrics()`."""

    def __init__(self, cfg: FilterConfig):
        self.cfg = cfg
        self.rows = self.kept = self.checked = self.right = 0
        self.dropped: Counter[str] = Counter()
        self.prompts = self.with_majority = self.majority_checked = self.majority_right = 0
        self.agreement: list[float] = []  # one exact sum per frame
        self.rewards: list[float] = []
        self.reward_correct: list[tuple[float, bool]] = []

    def add(self, filtered: pl.DataFrame) -> pl.DataFrame:
        self.rows += filtered.height
        self.kept += int(filtered.get_column("kept").sum())
        reason = pl.col("reason")  # a dropped row's reason starts with its rule's name (`_reasons`)
        dropped = filtered.select(reason.is_not_null().sum().alias(""),
                                  *[reason.str.starts_with(f"{rule}:").sum().alias(rule) for rule in RULES]).row(0)
        if dropped[0] != sum(dropped[1:]):
            raise ValueError("filter: a dropped row's reason names no rule")
        self.dropped.update({rule: n for rule, n in zip(RULES, dropped[1:], strict=True) if n})
        correct = filtered.get_column("correct").drop_nulls()
        self.checked += correct.len()
        self.right += int(correct.sum())
        # the columns read, before any row filter: a filter copies every column it carries
        per_prompt = (filtered.select("prompt_id", "majority", "agreement")
                      .filter(pl.col("prompt_id").is_first_distinct()))  # a group_by's first(), several times faster
        self.prompts += per_prompt.height
        self.with_majority += int(per_prompt.get_column("majority").is_not_null().sum())
        self.agreement.append(math.fsum(per_prompt.get_column("agreement").to_list()))
        majority_correct = (filtered.select("prompt_id", "correct", (pl.col("final_answer") == pl.col("majority"))
                                            .alias("_majority"))
                            .filter("_majority").filter(pl.col("prompt_id").is_first_distinct())
                            .get_column("correct").drop_nulls())
        self.majority_checked += majority_correct.len()
        self.majority_right += int(majority_correct.sum())
        rewarded = filtered.select("reward", "correct").filter(pl.col("reward").is_not_null())
        if rewarded.height:
            self.rewards += rewarded.get_column("reward").to_list()
            self.reward_correct += rewarded.filter(pl.col("correct").is_not_null()).select("reward", "correct").rows()
        return filtered

    def metrics(self) -> dict:
        dropped_by_rule = dict(sorted(self.dropped.items()))
        rules, checked = {}, self.rows
        for rule in self.cfg.rules():
            out = dropped_by_rule.get(rule, 0)
            rules[rule] = {"checked": checked, "kept": checked - out, "dropped": out}
            checked -= out
        metrics = {
            "rows": self.rows,
            "kept": self.kept,
            "dropped": self.rows - self.kept,
            "dropped_by_rule": dropped_by_rule,
            "rules": rules,
            "correct_rate": round(self.right / self.checked if self.checked else 0.0, 4),
            "self_consistency": {
                "prompts": self.prompts,
                "with_majority": self.with_majority,
                "mean_agreement": round(math.fsum(self.agreement) / self.prompts if self.prompts else 0.0, 4),
                "majority_correct_rate": (round(self.majority_right / self.majority_checked, 4)
                                          if self.majority_checked else None),
            },
        }
        if self.rewards:
            separation = auc([r for r, _ in self.reward_correct], [c for _, c in self.reward_correct])
            metrics["reward"] = {"mean": round(math.fsum(self.rewards) / len(self.rewards), 4),
                                 "auc": None if separation is None else round(separation, 4)}
        return metrics


def filter_metrics(filtered: pl.DataFrame, cfg: FilterConfig) -> dict:
    """Rows kept and dropped, in all and per rule (in order: a rule checks what the
    rules before it kept), and what the signals measured where a reference can tell."""
    tally = FilterTally(cfg)
    tally.add(filtered)
    return tally.metrics()


def final_answers(refinements: pl.DataFrame) -> pl.DataFrame:
    """The last round of each candidate (what filter and evaluation judge)."""
    return final_rounds(refinements)

