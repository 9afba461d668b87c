"""Critics: they read (prompt, response) pairs and write feedback.

- `ModelCritic`: a model (the policy itself for self-feedback, or a strong model)
  prompted with the feedback template; its reply is parsed into fields by the
  preset's parser. A critic whose replies do not parse stops early (`min_parse_rate`).
- `RuleCritic`: a task family's rule oracle (the micro world's), the strong critic
  of the embedded preset. It needs no model and writes the refinement too.
Both return `(text, ParsedFeedback)` per pair, in order; `feedback_frame` keeps
both, the text as written (it is training data) and the parsed fields as columns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import polars as pl

from honing.calls.backends import ChatRequest, SamplingParams
from honing.calls.ledger import SpendScope
from honing.calls.roles import Role
from honing.errors import HoningError
from honing.method.feedback import ParsedFeedback, feedback_columns
from honing.method.prompts import PromptSet, user

Parser = Callable[[str], ParsedFeedback]


class CriticError(HoningError, RuntimeError):
    """A critic whose replies cannot be used (one line, nothing written)."""


class Critic(Protocol):
    name: str

    def critique(self, prompts: Sequence[str], responses: Sequence[str]) -> list[tuple[str, ParsedFeedback]]: ...


@dataclass
class ModelCritic:
    role: Role
    templates: PromptSet
    parse: Parser
    max_tokens: int = 256
    temperature: float = 0.0
    # Stop when fewer than this share of the first `parse_probe` replies parse: a critic
    # that cannot write the format (wrong template, wrong model) costs 50 calls, not all.
    min_parse_rate: float = 0.0
    parse_probe: int = 50
    where: str = "critic"  # its params block, for the stop message

    @property
    def name(self) -> str:
        return self.role.model_id

    def critique(self, prompts, responses):
        params = SamplingParams(temperature=self.temperature, max_tokens=self.max_tokens)
        version = self.templates.version("feedback")
        requests = [
            ChatRequest((user(self.templates.feedback(p, r)),), params, template_version=version)
            for p, r in zip(prompts, responses, strict=True)
        ]
        desc = f"{self.role.name} feedback"
        if not self.min_parse_rate:  # one batch: the probe would change the batches a local model sees
            return self._parsed(self.role.call(requests, desc=desc))
        probe = self._parsed(self.role.call(requests[: self.parse_probe], desc=desc))
        self._check_parse_rate(probe)
        rest = self.role.call(requests[self.parse_probe :], desc=desc) if len(requests) > self.parse_probe else []
        return probe + self._parsed(rest)

    def _parsed(self, results) -> list[tuple[str, ParsedFeedback]]:
        texts = [res.text.strip() for res in results]
        return [(t, self.parse(t)) for t in texts]

    def _check_parse_rate(self, replies: list[tuple[str, ParsedFeedback]]) -> None:
        bad = [(t, fb) for t, fb in replies if fb.verdict == "unparsed"]
        if not replies or 1 - len(bad) / len(replies) >= self.min_parse_rate:
            return
        text, fb = bad[0]
        n, ok = len(replies), len(replies) - len(bad)
        raise CriticError(f"critic {self.name}: {ok} of its first {n} replies parsed ({ok / n:.0%}), below "
                          f"{self.where}.min_parse_rate {self.min_parse_rate:g}; stopped before the rest. "
                          f"First unparsed: {fb.parse_error}: {text[:80]!r}")


@dataclass
class RuleCritic:
    """A task family's rule oracle as a critic: `check(prompt, response)` gives the
    feedback text and the parsed feedback, refinement included."""

    check: Callable[[str, str], tuple[str, ParsedFeedback]]
    name: str = "oracle"

    def critique(self, prompts, responses):
        return [self.check(p, r) for p, r in zip(prompts, responses, strict=True)]


def feedback_frame(
    candidates: pl.DataFrame, critic: Critic, iteration: str
) -> pl.DataFrame:
    """Critique every candidate; one feedback row per candidate (schema `Feedback`):
    the reply as written, and its fields parsed once (`FEEDBACK_COLUMNS`)."""
    results = critic.critique(candidates["prompt"].to_list(), candidates["response"].to_list())
    return pl.DataFrame(
        {
            "id": candidates["id"],
            "prompt_id": candidates["prompt_id"],
            "response": candidates["response"],
            "feedback": [text for text, _ in results],
            **feedback_columns([fb for _, fb in results]),
            "critic": [critic.name] * len(results),
            "iteration": [iteration] * len(results),
        }
    )


def make_critic(spec: dict, *, policy: Role | None, templates: PromptSet, parse: Parser,
                check: Callable[[str, str], tuple[str, ParsedFeedback]] | None = None, max_tokens: int = 256,
                scope: SpendScope | None = None, params_path: str = "critic") -> Critic:
    """The critic a params block names: `self` (the policy), `oracle` (the task family's
    `check`), or a backend spec. A critic with a model of its own books its spend in
    `scope` (see `Role.from_params`) and by default stops when fewer than half of its
    first 50 replies parse (`min_parse_rate`, `parse_probe` in its block; 0 turns it off)."""
    spec = dict(spec)
    kind = spec.get("backend", "self")
    own_model = kind not in ("self", "oracle")
    guard = {"min_parse_rate": spec.pop("min_parse_rate", 0.5 if own_model else 0.0),
             "parse_probe": spec.pop("parse_probe", 50)}
    rate, probe = guard["min_parse_rate"], guard["parse_probe"]
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
        raise ValueError(f"params.yaml `{params_path}.min_parse_rate`: expected a share 0..1, got {rate!r}")
    if isinstance(probe, bool) or not isinstance(probe, int) or probe < 1:
        raise ValueError(f"params.yaml `{params_path}.parse_probe`: expected a count >= 1, got {probe!r}")
    if kind == "oracle":
        if check is None:
            raise ValueError(f"params.yaml `{params_path}`: backend oracle needs a task family with a step checker")
        return RuleCritic(check)
    if kind == "self":
        assert policy is not None, "a self critic needs the policy"
        return ModelCritic(policy, templates, parse, max_tokens, where=params_path, **guard)
    role = Role.from_params("critic", spec, scope=scope, params_path=params_path)
    return ModelCritic(role, templates, parse, max_tokens, where=params_path, **guard)
