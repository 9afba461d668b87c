"""judge: an LLM judge compares two answers to a prompt, in both orders (AlpacaEval-style).

For tasks without references: the judge role (any backend) reads the preset's
`judge.jinja2`, which shows a prompt and two answers, "A" and "B", and asks for a
last line "Winner: A", "Winner: B" or "Winner: tie" (`parse_judgement` reads it).
Every comparison of answers a and b runs twice, a shown first and b shown first,
and the two verdicts make one outcome:

    both orders pick the same answer     that answer wins
    both say tie                         tie (judged_tie)
    the orders disagree                  tie (orders_disagree): the judge followed position
    a reply does not parse               tie (unparsed), its reason counted
    a and b are the same text            tie (identical), the judge is not asked

What the judge is measured by (`judge_metrics`): order-swap agreement (the share of
comparisons, both replies parsed, whose two verdicts agree) and position bias (the
share of its decisive verdicts that pick the answer shown first: 0.5 is none).

Two uses: evaluation, each checkpoint's answers against a reference answer set
(the prompt pool's `reference`, or a reference model's answers), as a win rate
(wins plus half the ties, AlpacaEval's count); and preference pairs, each answer
of a prompt against the prompt's other answers, its value its wins.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from honing.calls.backends import ChatRequest, SamplingParams
from honing.calls.roles import Role
from honing.method.generate import answer_requests
from honing.method.prompts import PromptSet, user

_WINNER = re.compile(r"^[\s*#>_]*winner[\s*_]*:[\s*_]*(.*?)[\s*_.]*$", re.IGNORECASE | re.MULTILINE)
_VERDICTS = {"a": "A", "answer a": "A", "b": "B", "answer b": "B", "tie": "tie"}
TIE_CAUSES = ("judged_tie", "orders_disagree", "unparsed", "identical")


def parse_judgement(text: str) -> tuple[str | None, str | None]:
    """("A" | "B" | "tie", None) from the reply's last "Winner:" line, or (None, why not)."""
    if not text.strip():
        return None, "empty reply"
    lines = _WINNER.findall(text)
    if not lines:
        return None, "no 'Winner:' line"
    verdict = _VERDICTS.get(lines[-1].strip().lower())
    if verdict is None:
        return None, f"winner {lines[-1].strip()[:40]!r} is not A, B or tie"
    return verdict, None


@dataclass(frozen=True)
class Judgement:
    """One comparison of answers a and b: each order's verdict and the outcome."""

    ab: str  # the verdict with a shown first: "a", "b", "tie", "unparsed" ("identical": not asked)
    ba: str  # ... with b shown first
    outcome: str  # "a", "b" or "tie"
    tie_cause: str | None  # one of TIE_CAUSES when the outcome is a tie
    reasons: tuple[str, ...] = ()  # why replies did not parse

    @property
    def asked(self) -> bool:
        return self.tie_cause != "identical"


def combine(ab: str, ba: str, reasons: tuple[str, ...] = ()) -> Judgement:
    """The outcome of the two orders' verdicts (each in a/b terms)."""
    if "unparsed" in (ab, ba):
        return Judgement(ab, ba, "tie", "unparsed", reasons)
    if ab != ba:
        return Judgement(ab, ba, "tie", "orders_disagree")
    return Judgement(ab, ba, ab, "judged_tie" if ab == "tie" else None)


class Judge:
    """The judge role with the preset's judge template; `compare` runs both orders."""

    def __init__(self, role: Role, templates: PromptSet, max_tokens: int = 512):
        if not templates.has("judge"):
            raise ValueError(f"{templates.folder}/judge.jinja2: no judge template in this preset")
        self.role, self.templates, self.max_tokens = role, templates, max_tokens

    @classmethod
    def from_params(cls, spec: Mapping[str, Any], templates: PromptSet, *, scope=None,
                    params_path: str = "judge") -> Judge:
        """From a params block: a role block (backend, model, ...) plus `max_tokens`."""
        spec = dict(spec)
        max_tokens = int(spec.pop("max_tokens", 512))
        return cls(Role.from_params("judge", spec, scope=scope, params_path=params_path), templates, max_tokens)

    def request(self, prompt: str, first: str, second: str) -> ChatRequest:
        return ChatRequest(messages=(user(self.templates.judge(prompt, first, second)),),
                           params=SamplingParams(temperature=0.0, max_tokens=self.max_tokens),
                           template_version=self.templates.version("judge"))

    def compare(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> list[Judgement]:
        """One judgement per (prompt, a, b), in order; one batched call for every order."""
        asked = [i for i in range(len(prompts)) if a[i] != b[i]]
        requests = []
        for i in asked:
            requests += [self.request(prompts[i], a[i], b[i]), self.request(prompts[i], b[i], a[i])]
        replies = [r.text for r in self.role.call(requests, "judge")] if requests else []
        out = [Judgement("identical", "identical", "tie", "identical")] * len(prompts)
        for k, i in enumerate(asked):
            (first, why_ab), (second, why_ba) = parse_judgement(replies[2 * k]), parse_judgement(replies[2 * k + 1])
            ab = {"A": "a", "B": "b", "tie": "tie", None: "unparsed"}[first]  # a was shown as A
            ba = {"A": "b", "B": "a", "tie": "tie", None: "unparsed"}[second]  # b was shown as A
            out[i] = combine(ab, ba, tuple(r for r in (why_ab, why_ba) if r))
        return out


def judge_metrics(judgements: Sequence[Judgement]) -> dict[str, Any]:
    """Outcomes (a's wins, losses, ties; win rate = wins plus half the ties), ties by
    cause, unparsed replies by reason, order-swap agreement and position bias."""
    n = len(judgements)
    outcomes = Counter(j.outcome for j in judgements)
    asked = [j for j in judgements if j.asked]
    parsed = [j for j in asked if "unparsed" not in (j.ab, j.ba)]
    # a decisive verdict picks the first shown when it is "a" with a first, or "b" with b first
    decisive = [(v, v == first) for j in asked for v, first in ((j.ab, "a"), (j.ba, "b")) if v in ("a", "b")]
    return {
        "comparisons": n,
        "wins": outcomes["a"],
        "losses": outcomes["b"],
        "ties": outcomes["tie"],
        "win_rate": _share(outcomes["a"] + outcomes["tie"] / 2, n),
        "asked": len(asked),
        "order_swap_agreement": _share(sum(j.ab == j.ba for j in parsed), len(parsed)),
        "prefers_first_shown": _share(sum(first for _, first in decisive), len(decisive)),
        "ties_by_cause": {c: k for c in TIE_CAUSES if (k := sum(j.tie_cause == c for j in judgements))},
        "unparsed_by_reason": dict(sorted(Counter(r for j in judgements for r in j.reasons).items())),
    }


def _share(part: float, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


# ---------------------------------------------------------------- preference pairs


def judge_values(rows: pl.DataFrame, judge: Judge) -> tuple[dict[str, float], list[Judgement]]:
    """Row id -> the wins of the row's response against each other distinct response
    to its prompt (ties count half), and every judgement made. `rows`: id, prompt_id,
    prompt, response (e.g. every refinement round)."""
    answers: dict[str, list[str]] = {}  # prompt id -> distinct responses, in row order
    texts: dict[str, str] = {}
    for r in rows.iter_rows(named=True):
        texts[r["prompt_id"]] = r["prompt"]
        if r["response"] not in answers.setdefault(r["prompt_id"], []):
            answers[r["prompt_id"]].append(r["response"])
    matches = [(pid, x, y) for pid, rs in answers.items() for i, x in enumerate(rs) for y in rs[i + 1:]]
    judgements = judge.compare([texts[p] for p, _, _ in matches], [x for _, x, _ in matches],
                               [y for _, _, y in matches])
    wins: dict[tuple[str, str], float] = {(pid, r): 0.0 for pid, rs in answers.items() for r in rs}
    for (pid, x, y), j in zip(matches, judgements, strict=True):
        wins[pid, x] += {"a": 1.0, "b": 0.0, "tie": 0.5}[j.outcome]
        wins[pid, y] += {"a": 0.0, "b": 1.0, "tie": 0.5}[j.outcome]
    values = {r["id"]: wins[r["prompt_id"], r["response"]] for r in rows.iter_rows(named=True)}
    return values, judgements


# ---------------------------------------------------------------- evaluation


def judge_evaluation(rows: pl.DataFrame, prompts: pl.DataFrame, references: Mapping[str, str | None],
                     judge: Judge, name: str) -> tuple[pl.DataFrame, dict[str, Any]]:
    """A checkpoint's answers against the reference answers, directly (round 0) and
    after its last refinement round. `rows`: evaluation rows (prompt_id, round,
    response); `references`: prompt id -> the reference answer (None: none, skipped).

    Returns one row per comparison (schema `Judgements`) and the metrics: win rates
    direct and refined, and `judge_metrics` of each."""
    texts = dict(zip(prompts["id"].to_list(), prompts["prompt"].to_list(), strict=True))
    last = int(rows["round"].max())
    referenced = [pid for pid, reference in references.items() if reference is not None]
    chosen = (rows.filter(pl.col("round").is_in([0, last]) & pl.col("prompt_id").is_in(referenced))
              .sort("round", "prompt_id"))
    pids, responses = chosen["prompt_id"].to_list(), chosen["response"].to_list()
    refs = [references[p] for p in pids]
    judgements = judge.compare([texts[p] for p in pids], responses, refs)
    side = {"a": "answer", "b": "reference"}
    frame = pl.DataFrame({
        "id": [f"{p}@{r}" for p, r in zip(pids, chosen["round"].to_list(), strict=True)],
        "prompt_id": pids, "round": chosen["round"], "answer": responses, "reference": refs,
        "answer_first": [side.get(j.ab, j.ab) for j in judgements],
        "reference_first": [side.get(j.ba, j.ba) for j in judgements],
        "outcome": [{"a": "win", "b": "loss", "tie": "tie"}[j.outcome] for j in judgements],
        "tie_cause": [j.tie_cause for j in judgements],
        "parse_error": ["; ".join(j.reasons) or None for j in judgements],
        "judge": [judge.role.model_id] * len(judgements), "iteration": [name] * len(judgements),
    }, schema_overrides={"round": pl.Int64, "tie_cause": pl.String, "parse_error": pl.String})
    by_round = {r: [j for j, rr in zip(judgements, chosen["round"].to_list(), strict=True) if rr == r]
                for r in (0, last)}
    direct, refined = judge_metrics(by_round[0]), judge_metrics(by_round[last])
    metrics = {
        "win_rate_direct": direct["win_rate"],
        "win_rate_refined": refined["win_rate"],
        "without_reference": int(sum(references.get(p) is None for p in rows["prompt_id"].unique().to_list())),
        "direct": direct,
        "refined": refined,
    }
    return frame, metrics


def pool_references(prompts: pl.DataFrame) -> dict[str, str | None]:
    """The prompt pool's own reference answers (its `reference` column)."""
    return dict(zip(prompts["id"].to_list(), prompts["reference"].to_list(), strict=True))


def model_references(prompts: pl.DataFrame, role: Role, templates: PromptSet, max_tokens: int) -> dict[str, str]:
    """A reference model's greedy answers to the prompts (the preset's answer template)."""
    greedy = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    replies = role.call(answer_requests(prompts["prompt"].to_list(), templates, greedy), "reference answers")
    return {pid: r.text.strip() for pid, r in zip(prompts["id"].to_list(), replies, strict=True)}
