"""Roles and critics for the stages that call a model, with their budgets.

Only stages that make model calls import this module, so a stage that makes none
(filter, build_sft, build_pairs, train, ...) depends on none of the model-call code.

Money goes through the spend ledger beside the request cache
(`honing.calls.ledger`): each paid answer is booked to this run, this stage and its
role as it arrives. A role's `max_cost_usd` caps that role's spend in one stage of
the run, failed attempts included; `max_cost_usd` at the top of params.yaml caps
the whole run; the smaller remainder wins. The run is `$HONING_RUN`, else the
project root's absolute path: `HONING_RUN=<name> dvc repro` starts a new budget
period, and each queued DVC experiment (run in a temporary folder) is one of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from honing.calls.ledger import SpendScope, check_cap, current_run
from honing.calls.roles import Role

PARAMS_FILE = Path("params.yaml")


def run_cap(path: Path = PARAMS_FILE) -> float | None:
    """The run's spend cap (`max_cost_usd` at the top of params.yaml), if any. It is
    read here rather than through DVC: changing a cap changes no data, so it reruns
    nothing."""
    with open(path) as f:
        value = (yaml.safe_load(f) or {}).get("max_cost_usd")
    return check_cap(value, f"{path} `max_cost_usd`")


def spend_scope(stage: str) -> SpendScope:
    """Where this stage process books its spend: the ledger, this run, `stage`, and the run's cap."""
    return SpendScope(run=current_run(), stage=stage, run_max_cost_usd=run_cap())


def make_role(name: str, params: Mapping[str, Any], *, stage: str, model: str | None = None) -> Role:
    """The role `name` from its params block, capped by its own and the run's budget.

    A local backend (transformers, vllm) runs the checkpoint the stage passes as
    `model`; an openai backend names its served model in params (`model:`), and the
    checkpoint is used only when it does not.
    """
    spec = dict(params[name])
    if spec.get("backend") == "openai" and spec.get("model"):
        model = None
    return Role.from_params(name, spec, model=model, scope=spend_scope(stage))


def call_figures(policy: Role, critic=None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, runtime) of a stage's calls: the policy's under `calls`, and a critic
    with a model of its own (served or hosted) under `critic_calls`."""
    metrics, runtime = {"calls": policy.metrics()}, {"calls": policy.runtime()}
    role = getattr(critic, "role", None)
    if role is not None and role is not policy:
        metrics["critic_calls"], runtime["critic_calls"] = role.metrics(), role.runtime()
    return metrics, runtime
