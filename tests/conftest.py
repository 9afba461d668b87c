"""Shared fixtures: copies of the project to run stages and `dvc repro` in, and the
environment those subprocesses need (the venv's bin on PATH, a request cache of
their own)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def tracked_files(root: Path = REPO_ROOT) -> list[str]:
    """The project's files as git knows them (`git ls-files`), as they are on disk."""
    out = subprocess.run(["git", "ls-files", "-z"], cwd=root, check=True, capture_output=True).stdout
    return [name for name in out.decode().split("\0") if name]


def copy_project(dest: Path, root: Path = REPO_ROOT) -> Path:
    """Copy every tracked file of the project (working-tree contents) into `dest`.

    Only tracked files: no data/, metrics/, dvc.lock or caches of the checkout the
    tests run from, so the copy starts as a fresh clone would."""
    for name in tracked_files(root):
        source = root / name
        if not source.is_file():  # deleted in the working tree, not yet committed
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return dest


def subprocess_env(cache_dir: Path, **extra: str) -> dict[str, str]:
    """The environment for a stage or `dvc` run: this interpreter's bin first on PATH
    (so `python` in dvc.yaml is the venv's), a request cache of its own, no debug
    tracebacks and no colours in output we parse."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["HONING_CACHE_DIR"] = str(cache_dir)
    # The library from the project copy the subprocess runs in (its cwd), not from the
    # editable install's checkout: what dvc.yaml hashes is then what runs.
    env["PYTHONPATH"] = os.pathsep.join(["src", *filter(None, [env.get("PYTHONPATH")])])
    env.pop("HONING_DEBUG", None)
    env.update({"NO_COLOR": "1", "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1", **extra})
    return env


@pytest.fixture
def project_copy(tmp_path) -> Callable[[str], Path]:
    """A factory: `project_copy("name")` is a fresh copy of the tracked project files
    under the test's tmp_path."""

    def make(name: str = "repo") -> Path:
        return copy_project(tmp_path / name)

    return make
