"""The critic a stage's params name, for the stages that critique answers, and the
checks that come before it.

Kept apart from `_models` so that a stage that only generates (generate) does not
depend on the critics' code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from honing.calls.roles import Role
from honing.method.critique import make_critic
from honing.method.feedback import FeedbackPlan, load_preset, plan_feedback
from honing.method.prompts import PromptSet
from honing.tasks.base import Tasks
from stages._models import spend_scope


def feedback_plan(params: Mapping[str, Any], spec: Mapping[str, Any], tasks: Tasks, *,
                  mode: str | None = None, mode_key: str = "refine.mode") -> FeedbackPlan:
    """The preset's parser (and step tools) once the preset (`templates`), the refinement
    mode, the critic `spec` and the task families are known to fit; one line when they
    do not. Call it before building any role: it loads no model."""
    return plan_feedback(load_preset(params["templates"]), tasks.families, mode=mode,
                         rule_critic=spec.get("backend") == "oracle", mode_key=mode_key)


def make_stage_critic(params: Mapping[str, Any], spec: Mapping[str, Any], policy: Role, *, stage: str,
                      plan: FeedbackPlan, max_tokens: int = 256):
    """The critic `spec` names (self, oracle, or a backend block), with the preset's
    templates and parser, booking its spend to `stage` under the run's cap."""
    # The top-level `critic:` block, or the stage's own (`refine: {critic: ...}`), for messages.
    params_path = "critic" if spec is params.get("critic") else f"{stage.partition('@')[0]}.critic"
    return make_critic(dict(spec), policy=policy, templates=PromptSet(params["templates"]), parse=plan.parse,
                       check=plan.check, max_tokens=max_tokens, scope=spend_scope(stage),
                       params_path=params_path)
