"""The critic a stage's params name, for the stages that critique answers.

Kept apart from `_models` so that a stage that only generates (generate) does not
depend on the critics' code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from honing.calls.roles import Role
from honing.method.critique import make_critic
from honing.method.prompts import PromptSet
from stages._models import spend_scope


def make_stage_critic(params: Mapping[str, Any], spec: Mapping[str, Any], policy: Role, *, stage: str,
                      max_tokens: int = 256):
    """The critic `spec` names (self, oracle, or a backend block), with the preset's
    templates and feedback format, booking its spend to `stage` under the run's cap."""
    # The top-level `critic:` block, or the stage's own (`refine: {critic: ...}`), for messages.
    params_path = "critic" if spec is params.get("critic") else f"{stage.partition('@')[0]}.critic"
    return make_critic(dict(spec), policy=policy, templates=PromptSet(params["templates"]),
                       feedback_format=params["feedback_format"], max_tokens=max_tokens,
                       scope=spend_scope(stage), params_path=params_path)
