"""A stage's params, exactly as dvc.yaml lists them, and a clean exit.

DVC resolves the params (with its stage loader and params reader, as
`dvc.api.params_show(stages=...)` does), so a stage can read only what dvc.yaml lists
for it: what it reads and what reruns it cannot drift apart. An iteration may
override any stage's block (`iterations.it2.refine: {rounds: 2}`); the override is
merged key by key into the stage's block, nested blocks included
(`iterations.it2.train: {sft: {learning_rate: 1e-4}}` changes that one rate and
keeps the rest of `train.sft`).
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

from honing.errors import HoningError

T = TypeVar("T")

DVC_CONFIG = {"core": {"no_scm": True}}  # stage scripts also run in copies of the project without git


class StageError(HoningError, RuntimeError):
    """A failure the user can act on; the stage prints its message and exits 1."""


def load_params(stage: str, key: str | None = None) -> dict[str, Any]:
    """The params dvc.yaml lists for `stage` (`stage@key` in a foreach family), nested
    as in params.yaml: what `dvc.api.params_show(stages=[name])` returns.

    It reads dvc.yaml alone. params_show also parses dvc.lock twice (once with the
    stage, once more for the repo index), and takes no param from it: 0.89 s of every
    stage's start on the reduced DAG's 3,600-line lock, against 0.14 s here
    (tests/test_stage.py holds the two equal for every stage)."""
    from dvc.dependency.param import read_param_file
    from dvc.dvcfile import PROJECT_FILE, ProjectFile
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from dvc.stage.loader import StageLoader

    name = f"{stage}@{key}" if key is not None else stage
    try:
        with Repo(config=DVC_CONFIG) as repo:
            project = ProjectFile(repo, repo.fs.join(repo.root_dir, PROJECT_FILE))
            # one dependency per params file, its key paths in dvc.yaml's order (none: all)
            values = {dep.fs_path: read_param_file(repo.fs, dep.fs_path, list(dep.params) or None)
                      for dep in StageLoader(project, project.contents)[name].params}
            # a key that two params files hold is prefixed with its file, as params_show does
            counts = Counter(k for data in values.values() for k in data)
            return {(k if counts[k] == 1 else f"{repo.fs.relpath(path, repo.root_dir)}:{k}"): v
                    for path, data in values.items() for k, v in data.items()}
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
