"""Roles and critics for the stages that call a model, with their budgets.

Only stages that make model calls import this module, so a stage that makes none
(filter, build_sft, build_pairs, train, ...) depends on none of the model-call code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from honing.calls.roles import Role

PARAMS_FILE = Path("params.yaml")


def run_cap(path: Path = PARAMS_FILE) -> float | None:
    """The run's spend cap (`max_cost_usd` at the top of params.yaml), if any. It is
    read here rather than through DVC: changing a cap changes no data, so it reruns
    nothing."""
    with open(path) as f:
        return (yaml.safe_load(f) or {}).get("max_cost_usd")


def spent_usd(runtime_dir: Path = Path("runtime")) -> float:
    """What the stages' latest runs spent on new model calls (`spent_usd` in runtime/)."""

    def spent(node: Any) -> float:
        if isinstance(node, dict):
            return sum(v if k == "spent_usd" and isinstance(v, (int, float)) else spent(v)
                       for k, v in node.items())
        return 0.0

    total = 0.0
    for path in sorted(runtime_dir.rglob("*.json")) if runtime_dir.exists() else []:
        try:
            total += spent(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return total


def run_budget() -> float | None:
    """What is left of the run's cap, if any."""
    cap = run_cap()
    return None if cap is None else max(cap - spent_usd(), 0.0)


def make_role(name: str, params: Mapping[str, Any], *, stage: str, model: str | None = None) -> Role:
    """The role `name` from its params block, capped by its own and the run's budget.

    A local backend (transformers, vllm) runs the checkpoint the stage passes as
    `model`; an openai backend names its served model in params (`model:`), and the
    checkpoint is used only when it does not.
    """
    spec = dict(params[name])
    if spec.get("backend") == "openai" and spec.get("model"):
        model = None
    return Role.from_params(name, spec, model=model, budget_usd=run_budget())


def call_figures(policy: Role, critic=None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, runtime) of a stage's calls: the policy's under `calls`, and a critic
    with a model of its own (served or hosted) under `critic_calls`."""
    metrics, runtime = {"calls": policy.metrics()}, {"calls": policy.runtime()}
    role = getattr(critic, "role", None)
    if role is not None and role is not policy:
        metrics["critic_calls"], runtime["critic_calls"] = role.metrics(), role.runtime()
    return metrics, runtime
