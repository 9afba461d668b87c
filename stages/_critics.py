"""The critic a stage's params name, for the stages that critique answers, and the
checks that come before it.

Kept apart from `_models` so that a stage that only generates (generate) does not
depend on the critics' code.

A critic block may say how long its feedback may be (`max_tokens`, else the stage's
own), and `serve: {referee: <prompts .parquet>}` starts the referee
(`honing serve --referee`, honing.calls.referee) on its base_url's port for as long
as the stage runs: the openai backend then talks to it over HTTP as to any served
critic. Remove `serve` and point base_url at a real one to swap it.
"""

from __future__ import annotations

import atexit
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from honing.calls.referee import referee_server
from honing.calls.roles import Role
from honing.method.critique import make_critic
from honing.method.feedback import FeedbackPlan, load_preset, plan_feedback
from honing.method.prompts import PromptSet
from honing.tasks.base import Tasks
from stages._models import spend_scope
from stages._params import StageError


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
    spec = dict(spec)
    max_tokens = spec.pop("max_tokens", max_tokens)
    if "serve" in spec:
        serve_referee(spec.pop("serve"), spec, params["templates"], params_path)
    return make_critic(spec, policy=policy, templates=PromptSet(params["templates"]), parse=plan.parse,
                       check=plan.check, max_tokens=max_tokens, scope=spend_scope(stage),
                       params_path=params_path)


def serve_referee(serve: Any, spec: Mapping[str, Any], templates: str, where: str) -> None:
    """Start the referee that `serve: {referee: <prompts file>}` names on the port of the
    block's base_url (127.0.0.1), stopped when the stage process exits."""
    if not isinstance(serve, Mapping) or set(serve) != {"referee"} or not serve["referee"]:
        raise StageError(f"params.yaml `{where}.serve`: expected {{referee: <prompts .parquet>}}, found {serve!r}")
    if not Path(serve["referee"]).exists():
        raise StageError(f"params.yaml `{where}.serve`: the referee's prompts {serve['referee']} do not exist")
    url = urlsplit(str(spec.get("base_url") or ""))
    if spec.get("backend") != "openai" or url.hostname not in ("127.0.0.1", "localhost") or not url.port:
        raise StageError(f"params.yaml `{where}.serve`: a served critic needs backend openai and base_url "
                         f"http://127.0.0.1:<port>/v1; found backend {spec.get('backend')!r}, base_url "
                         f"{spec.get('base_url')!r}")
    server = referee_server(serve["referee"], templates, model=spec.get("model") or "referee", port=url.port)
    try:
        server.start()
    except OSError as e:
        raise StageError(f"params.yaml `{where}.serve`: cannot serve the referee on port {url.port} ({e.strerror}); "
                         "stop what holds it or pick another port in base_url") from e
    atexit.register(server.stop)
