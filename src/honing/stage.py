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
