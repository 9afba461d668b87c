"""What every stage script shares: its params block, clean failures, metrics files.

The library itself knows nothing of DVC or params.yaml; stage scripts use this
module to turn their params block into plain dicts/configs and to fail with one
clear line (file, row id, column) instead of a traceback wall.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import yaml

T = TypeVar("T")

PARAMS_FILE = Path("params.yaml")


class StageError(RuntimeError):
    """A failure the user can act on; the stage prints its message and exits 1."""


def load_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    with open(path) as f:
        return yaml.safe_load(f) or {}


def stage_params(stage: str, iteration: str | None = None, params: Mapping | None = None) -> dict:
    """`params[stage]`, updated by `params["iterations"][iteration][stage]` when present."""
    params = params if params is not None else load_params()
    block = dict(params.get(stage) or {})
    if iteration is not None:
        iterations = params.get("iterations") or {}
        if iteration not in iterations:
            raise StageError(f"params.yaml: no iteration {iteration!r} under `iterations:` "
                             f"(have {', '.join(iterations) or 'none'})")
        block.update((iterations[iteration] or {}).get(stage) or {})
    return block


def iteration_init(params: Mapping, iteration: str) -> str:
    """The checkpoint an iteration starts from (`iterations.<name>.init`)."""
    entry = (params.get("iterations") or {}).get(iteration) or {}
    if "init" not in entry:
        raise StageError(f"params.yaml: `iterations.{iteration}.init` (the starting checkpoint) is missing")
    return entry["init"]


def to_config(cls: type[T], block: Mapping[str, Any], where: str) -> T:
    """Build a frozen config dataclass from a params block, rejecting unknown keys."""
    assert is_dataclass(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(block) - known)
    if unknown:
        raise StageError(f"params.yaml `{where}`: unknown key(s) {', '.join(unknown)}; "
                         f"expected some of {', '.join(sorted(known))}")
    return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in block.items()})


def write_json(path: str | Path, data: Mapping[str, Any]) -> None:
    """Write JSON atomically (temp file, then rename) so no half-written file remains."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.chmod(tmp, 0o644)  # mkstemp makes files private; metrics are for everyone
    os.replace(tmp, path)


def _is_runtime(key: str) -> bool:
    from honing.calls import RUNTIME_KEYS, RUNTIME_PREFIXES

    return key in RUNTIME_KEYS or key == "tokens_per_second" or key.startswith(RUNTIME_PREFIXES)


def _split_runtime(data: Any) -> tuple[Any, Any]:
    if not isinstance(data, Mapping):
        return data, None
    kept, runtime = {}, {}
    for k, v in data.items():
        if _is_runtime(k):
            runtime[k] = v
            continue
        kept[k], sub = _split_runtime(v)
        if sub:
            runtime[k] = sub
    return kept, runtime


def write_metrics(path: str | Path, data: Mapping[str, Any]) -> None:
    """A stage's metrics JSON (a DVC output, so in dvc.lock's hashes), holding what
    the data determines. What varies from run to run with the same data (seconds,
    cache hits, retries, new spend) goes to `runtime/<same path>`, which dvc.yaml
    lists as top-level metrics: `dvc metrics show` reads it, dvc.lock does not."""
    kept, runtime = _split_runtime(data)
    write_json(path, kept)
    if runtime:
        path = Path(path)
        under = path.relative_to("metrics") if path.parts[0] == "metrics" else Path(path.name)
        write_json(Path("runtime") / under, runtime)


def main(run: Callable[[list[str]], None]) -> None:
    """Run a stage's body; known failures print one line to stderr and exit 1."""
    from honing.backends.base import BackendError

    # ValueError covers bad params and artifacts (ArtifactError is one); set
    # HONING_DEBUG=1 to see the traceback instead of the one line.
    known: tuple[type[BaseException], ...] = (StageError, BackendError, ValueError, FileNotFoundError)
    try:
        run(sys.argv[1:])
    except known as e:
        if os.environ.get("HONING_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


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


def run_budget(params: Mapping[str, Any]) -> float | None:
    """What is left of the run's cap (`max_cost_usd` at the top of params.yaml), if any."""
    cap = params.get("max_cost_usd")
    return None if cap is None else max(cap - spent_usd(), 0.0)


def make_role(name: str, params: Mapping[str, Any], model: str | None = None):
    """The role `name` from its params block, capped by the stage's and the run's budget.

    A local backend (transformers, vllm) runs the checkpoint the stage passes as
    `model`; an openai backend names its served model in params (`model:`), and the
    checkpoint is used only when it does not.
    """
    from honing.roles import Role

    spec = dict(params[name])
    if spec.get("backend") == "openai" and spec.get("model"):
        model = None
    return Role.from_params(name, spec, model=model, budget_usd=run_budget(params))


def make_stage_critic(params: Mapping[str, Any], spec: Mapping[str, Any], policy, max_tokens: int = 256):
    """The critic `spec` names (self, oracle, or a backend block), with the preset's
    templates and feedback format and what is left of the run's budget."""
    from honing.critique import make_critic
    from honing.prompts import PromptSet

    return make_critic(dict(spec), policy=policy, templates=PromptSet(params["templates"]),
                       feedback_format=params["feedback_format"], max_tokens=max_tokens,
                       budget_usd=run_budget(params))


def critic_metrics(critic, policy) -> dict[str, Any]:
    """The calls of a critic with a model of its own (a served or hosted critic), so
    that its tokens and cost reach the stage's metrics beside the policy's."""
    role = getattr(critic, "role", None)
    return {} if role is None or role is policy else {"critic_calls": role.metrics()}
