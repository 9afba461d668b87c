"""A stage's params, exactly as dvc.yaml lists them, and a clean exit.

DVC resolves the params (`dvc.api.params_show(stages=...)`), so a stage can read
only what dvc.yaml lists for it: what it reads and what reruns it cannot drift
apart. An iteration may override any stage's block (`iterations.it2.refine:
{rounds: 2}`); the override is merged key by key into the stage's block, nested
blocks included (`iterations.it2.train: {sft: {learning_rate: 1e-4}}` changes
that one rate and keeps the rest of `train.sft`).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

from honing.errors import HoningError

T = TypeVar("T")


class StageError(HoningError, RuntimeError):
    """A failure the user can act on; the stage prints its message and exits 1."""


def load_params(stage: str, key: str | None = None) -> dict[str, Any]:
    """The params dvc.yaml lists for `stage` (`stage@key` in a foreach family), nested
    as in params.yaml."""
    import dvc.api
    from dvc.exceptions import DvcException

    name = f"{stage}@{key}" if key is not None else stage
    try:  # no_scm: stage scripts also run in copies of the project without git
        return dvc.api.params_show(stages=[name], config={"core": {"no_scm": True}})
    except DvcException as e:
        raise StageError(f"params of stage {name!r}: {e}") from e


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` merged into `base` key by key; nested mappings merge, the rest replace."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def stage_block(params: Mapping[str, Any], stage: str, iteration: str | None = None) -> dict[str, Any]:
    """`params[stage]`, with `params["iterations"][iteration][stage]` merged in deeply."""
    block = dict(params.get(stage) or {})
    if iteration is None:
        return block
    iterations = params.get("iterations") or {}
    if iteration not in iterations:
        raise StageError(f"params.yaml: no iteration {iteration!r} under `iterations:`")
    return deep_merge(block, (iterations[iteration] or {}).get(stage) or {})


def iteration_init(params: Mapping[str, Any], iteration: str) -> str:
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
    try:
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in block.items()})
    except (TypeError, ValueError) as e:
        raise StageError(f"params.yaml `{where}`: {e}") from e


def main(run: Callable[[list[str]], None]) -> None:
    """Run a stage's body; failures meant for people print one line and exit 1.

    ValueError covers bad params and artifacts; set HONING_DEBUG=1 to see the
    traceback instead of the one line.
    """
    started = time.time()
    try:
        run(sys.argv[1:])
    except (HoningError, ValueError, FileNotFoundError) as e:
        if os.environ.get("HONING_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    _record_seconds(started)


def _record_seconds(started: float) -> None:
    """The stage's wall-clock seconds, start-up (imports) included, in
    runtime/stages/<stage>.json: per-run figures, outside DVC's hashes."""
    import psutil

    from stages._outputs import write_json

    stage = "@".join([Path(sys.argv[0]).stem, *sys.argv[1:2]])
    born = psutil.Process().create_time()
    write_json(Path("runtime/stages") / f"{stage}.json", {
        "seconds": round(time.time() - born, 2), "startup_seconds": round(started - born, 2)})
