"""Critics: they read (prompt, response) pairs and write feedback.

- `ModelCritic`: a model (the policy itself for self-feedback, or a strong model)
  prompted with the feedback template; its reply is parsed into fields.
- `OracleCritic`: the micro world's rule oracle, the strong critic of the
  embedded preset. It needs no model and writes the refinement too.
Both return `(text, ParsedFeedback)` per pair, in order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol, Sequence

import polars as pl

from honing.calls.backends import ChatRequest, SamplingParams
from honing.calls.ledger import SpendScope
from honing.calls.roles import Role
from honing.method.feedback import ParsedFeedback, parse_check, parse_feedback
from honing.method.prompts import PromptSet, user
from honing.micro import oracle


class Critic(Protocol):
    name: str

    def critique(self, prompts: Sequence[str], responses: Sequence[str]) -> list[tuple[str, ParsedFeedback]]: ...


@dataclass
class ModelCritic:
    role: Role
    templates: PromptSet
    feedback_format: str = "check"
    max_tokens: int = 256
    temperature: float = 0.0

    @property
    def name(self) -> str:
        return self.role.model_id

    def critique(self, prompts, responses):
        params = SamplingParams(temperature=self.temperature, max_tokens=self.max_tokens)
        version = self.templates.version("feedback")
        requests = [
            ChatRequest((user(self.templates.feedback(p, r)),), params, template_version=version)
            for p, r in zip(prompts, responses)
        ]
        texts = [res.text.strip() for res in self.role.call(requests, desc=f"{self.role.name} feedback")]
        return [(t, parse_feedback(t, self.feedback_format)) for t in texts]


class OracleCritic:
    """The rule oracle as a critic (micro world only: it reads the problem text)."""

    name = "oracle"

    def critique(self, prompts, responses):
        out = []
        for p, r in zip(prompts, responses):
            verdict = oracle.check_text(p, r)
            parsed = parse_check(verdict.feedback)
            out.append((verdict.feedback, replace(parsed, refinement=verdict.refinement)))
        return out


def feedback_frame(
    candidates: pl.DataFrame, critic: Critic, iteration: str
) -> pl.DataFrame:
    """Critique every candidate; one feedback row per candidate (schema `Feedback`)."""
    results = critic.critique(candidates["prompt"].to_list(), candidates["response"].to_list())
    return pl.DataFrame(
        {
            "id": candidates["id"],
            "prompt_id": candidates["prompt_id"],
            "response": candidates["response"],
            "feedback": [text for text, _ in results],
            "verdict": [f.verdict for _, f in results],
            "score": pl.Series([f.score for _, f in results], dtype=pl.Int64),
            "weaknesses": pl.Series([f.weaknesses for _, f in results], dtype=pl.String),
            "suggestions": pl.Series([f.suggestions for _, f in results], dtype=pl.String),
            "parse_error": pl.Series([f.parse_error for _, f in results], dtype=pl.String),
            "critic": [critic.name] * len(results),
            "iteration": [iteration] * len(results),
        }
    )


def make_critic(spec: dict, *, policy: Role | None, templates: PromptSet, feedback_format: str,
                max_tokens: int = 256, scope: SpendScope | None = None, params_path: str = "critic") -> Critic:
    """The critic a params block names: `self` (the policy), `oracle`, or a backend spec.
    A critic with a model of its own books its spend in `scope` (see `Role.from_params`)."""
    kind = spec.get("backend", "self")
    if kind == "oracle":
        return OracleCritic()
    if kind == "self":
        assert policy is not None, "a self critic needs the policy"
        return ModelCritic(policy, templates, feedback_format, max_tokens)
    role = Role.from_params("critic", spec, scope=scope, params_path=params_path)
    return ModelCritic(role, templates, feedback_format, max_tokens)
