"""The DVC project as publishing sees it: what an artifact name means, which stage
wrote a file (dvc.lock), what that stage and every stage before it ran with
(params, metrics), which checkpoint generated an artifact and which artifacts
trained a checkpoint, the git revision, and whether DVC calls an output stale.

Everything is read from dvc.lock (stages resolved, md5 of every output), the
metrics files dvc.lock lists, and the `checkpoints:` map of params.yaml. Nothing
here knows a particular stage: the links come from the lock's deps and outs.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any

import yaml

from honing.publish import PublishError


@dataclass(frozen=True)
class Kind:
    """A kind of artifact: its name before `@`, where the pipeline writes it, what it is."""

    name: str
    schema: str  # its schema's name in schemas.registry
    patterns: tuple[str, ...]  # "{at}" is the iteration or checkpoint; the first that exists wins
    what: str
    trl: str | None = None  # the TRL format it is in, when it is one
    trains: str | None = None  # the training method that reads it ("sft", "dpo"), if any
    split: str = "train"


KINDS = {k.name: k for k in (
    Kind("meta_corpus", "meta_corpus", ("data/meta_corpus/corpus.parquet",),
         "the strong critic's feedback (weaknesses, score, suggestions, verdict) and refinement "
         "of policy, gold and noise answers: the meta-skill corpus of SELF and SRT"),
    Kind("sft", "sft", ("data/{at}/build_sft/sft.parquet", "data/{at}/sft.parquet"),
         "supervised records (answers, feedback, refinements) in TRL's conversational prompt/completion format",
         trl="prompt/completion (conversational)", trains="sft"),
    Kind("pairs", "pairs", ("data/{at}/build_pairs/pairs.parquet",),
         "preference pairs of the policy's own answers in TRL's conversational preference format",
         trl="prompt/chosen/rejected (conversational)", trains="dpo"),
    Kind("feedback", "feedback", ("data/{at}/critique/feedback.parquet",),
         "the policy's critique of its own candidates, parsed into weaknesses, score, suggestions, verdict"),
    Kind("refinements", "refinements", ("data/{at}/refine/refinements.parquet",),
         "every round of online self-refinement of every candidate, with its critique"),
    Kind("candidates", "candidates", ("data/{at}/generate/candidates.parquet",),
         "the policy's sampled and greedy answers to the iteration's prompts"),
    Kind("filtered", "filtered", ("data/{at}/filter/filtered.parquet",),
         "every final answer with `kept` and the rule that dropped it"),
    Kind("evaluate", "evaluation", ("data/{at}/evaluate/rows.parquet",),
         "held-out answers of a checkpoint, direct and after each refinement round, judged against the reference",
         split="test"),
    Kind("prompts", "prompts", ("data/prepare/{at}.parquet",), "a prepared prompt pool (meta, train or eval)"),
)}
ALIASES = {"evaluation": "evaluate", "corpus": "meta_corpus"}


@dataclass(frozen=True)
class Artifact:
    name: str  # "sft@it1", "meta_corpus"
    kind: Kind
    at: str | None
    path: str  # relative to the project, posix

    @property
    def config(self) -> str:
        """Its config name in a dataset repo ("sft_it1")."""
        return self.name.replace("@", "_")


@dataclass(frozen=True)
class Checkpoint:
    name: str  # its name under `checkpoints:` ("it1"), else its path
    path: str

    @property
    def label(self) -> str:
        return f"model@{self.name}" if self.name != self.path else self.path


@dataclass(frozen=True)
class LockStage:
    name: str
    cmd: str
    deps: tuple[dict[str, Any], ...]
    outs: tuple[dict[str, Any], ...]
    params: dict[str, Any] = field(default_factory=dict)


def file_md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


class Project:
    """A DVC project root with its dvc.lock and checkpoint names."""

    def __init__(self, root: str | Path, checkpoints: Mapping[str, str] | None = None):
        self.root = Path(root).resolve()
        lock_path = self.root / "dvc.lock"
        if not lock_path.is_file():
            raise PublishError(f"{lock_path}: no such file (run `dvc repro` first: publishing reads "
                               "each artifact's md5 and params from it)")
        lock = yaml.safe_load(lock_path.read_text()) or {}
        self.stages = {
            name: LockStage(name, entry.get("cmd", ""), tuple(entry.get("deps") or ()), tuple(entry.get("outs") or ()),
                            {k: v for file in (entry.get("params") or {}).values() for k, v in file.items()})
            for name, entry in (lock.get("stages") or {}).items()
        }
        if checkpoints is None:
            params = self.root / "params.yaml"
            checkpoints = (yaml.safe_load(params.read_text()) or {}).get("checkpoints") if params.is_file() else None
        self.checkpoints = dict(checkpoints or {})
        self._parents = {name: self._stage_parents(stage) for name, stage in self.stages.items()}
        try:
            order = list(TopologicalSorter(self._parents).static_order())
        except CycleError as e:
            raise PublishError(f"{lock_path}: its stages depend on each other in a cycle ({e.args[1]})") from e
        self.order = {name: i for i, name in enumerate(order)}

    # ---- names and paths -------------------------------------------------------------

    def rel(self, path: str | Path) -> str:
        p = Path(path)
        p = (p if p.is_absolute() else (self.root / p)).resolve()
        try:
            return p.relative_to(self.root).as_posix()
        except ValueError:
            raise PublishError(f"{path}: outside the project {self.root}") from None

    def resolve(self, spec: str) -> Artifact | Checkpoint:
        """An artifact or checkpoint from a name (`sft@it1`, `meta_corpus`, `model@it2`) or a path."""
        head, _, at = spec.partition("@")
        if head == "model" and at:
            if at not in self.checkpoints:
                raise PublishError(f"{spec}: no checkpoint {at!r} under `checkpoints:` in params.yaml "
                                   f"(have {', '.join(self.checkpoints) or 'none'})")
            return self.checkpoint(self.checkpoints[at])
        kind = KINDS.get(ALIASES.get(head, head))
        if kind is not None and "/" not in spec:
            if bool(at) != any("{at}" in p for p in kind.patterns):
                form = f"{kind.name}@<name>" if any("{at}" in p for p in kind.patterns) else kind.name
                raise PublishError(f"{spec}: expected {form}")
            paths = [p.format(at=at) for p in kind.patterns]
            found = next((p for p in paths if (self.root / p).is_file()), paths[0])
            return Artifact(f"{kind.name}@{at}" if at else kind.name, kind, at or None, found)
        path = Path(spec)
        if not (path if path.is_absolute() else self.root / path).exists():
            names = ", ".join(f"{k}@<it>" if "{at}" in v.patterns[0] else k for k, v in KINDS.items())
            raise PublishError(f"{spec}: neither a file nor an artifact name (names: {names}, model@<checkpoint>)")
        rel = self.rel(spec)
        if (self.root / rel).is_dir():
            return self.checkpoint(rel)
        return self.artifact_at(rel)

    def artifact_at(self, rel: str) -> Artifact:
        """The artifact a path holds, named as the pipeline names it."""
        for kind in KINDS.values():
            for pattern in kind.patterns:
                regex = re.escape(pattern).replace(re.escape("{at}"), "(?P<at>[^/]+)")
                m = re.fullmatch(regex, rel)
                if m:
                    at = m.groupdict().get("at")
                    return Artifact(f"{kind.name}@{at}" if at else kind.name, kind, at, rel)
        raise PublishError(f"{rel}: not an artifact the pipeline writes (expected one of "
                           f"{', '.join(p for k in KINDS.values() for p in k.patterns)})")

    def checkpoint(self, rel: str) -> Checkpoint:
        names = {Path(p).as_posix().rstrip("/"): n for n, p in self.checkpoints.items()}
        return Checkpoint(names.get(rel, rel), rel)

    def is_checkpoint(self, rel: str) -> bool:
        """A path under `checkpoints:`, or a stage's output folder holding a model's config.json."""
        rel = rel.rstrip("/")
        if rel in {Path(p).as_posix().rstrip("/") for p in self.checkpoints.values()}:
            return True
        return (self.root / rel / "config.json").is_file() and any(
            o["path"] == rel for stage in self.stages.values() for o in stage.outs)

    # ---- dvc.lock ----------------------------------------------------------------------

    def producer(self, rel: str) -> tuple[LockStage, dict[str, Any]]:
        """The stage whose output holds `rel`, and that output's dvc.lock entry."""
        for stage in self.stages.values():
            for out in stage.outs:
                if _under(rel, out["path"]):
                    return stage, out
        raise PublishError(f"{rel}: no stage in dvc.lock writes it (publishing needs its provenance: "
                           "run `dvc repro` for the stage that writes it)")

    def _stage_parents(self, stage: LockStage) -> set[str]:
        parents = set()
        for dep in stage.deps:
            for other in self.stages.values():
                if other.name != stage.name and any(
                        _under(dep["path"], o["path"]) or _under(o["path"], dep["path"]) for o in other.outs):
                    parents.add(other.name)
        return parents

    def upstream(self, stage: str) -> list[str]:
        """`stage` and every stage before it, in the order DVC runs them."""
        seen, todo = set(), [stage]
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(self._parents[name])
        return sorted(seen, key=self.order.__getitem__)

    def metrics(self, stage: str) -> dict[str, Any]:
        """The stage's metrics files (its JSON outs under metrics/), merged."""
        out: dict[str, Any] = {}
        for o in self.stages[stage].outs:
            path = self.root / o["path"]
            if o["path"].startswith("metrics/") and o["path"].endswith(".json") and path.is_file():
                out.update(json.loads(path.read_text()))
        return out

    def generated_by(self, stage: str) -> list[Checkpoint]:
        """The checkpoints nearest upstream of `stage`: the models whose answers it holds."""
        found, seen, todo = {}, set(), [stage]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            for dep in self.stages[name].deps:
                if self.is_checkpoint(dep["path"]):
                    found[dep["path"]] = self.checkpoint(dep["path"])
                    continue
                todo.extend(p for p in self._parents[name] if any(
                    _under(dep["path"], o["path"]) or _under(o["path"], dep["path"]) for o in self.stages[p].outs))
        return sorted(found.values(), key=lambda c: next(
            (self.order[s.name] for s in self.stages.values() if any(o["path"] == c.path for o in s.outs)), -1))

    def trained_from(self, checkpoint: Checkpoint) -> tuple[list[Artifact], list[Checkpoint], str | None]:
        """(the artifacts its training stage read, the checkpoint it started from, the method).

        An artifact counts when the stage lists it (a dep, or an out beside the
        checkpoint, like train_meta's SFT records) and the method reads its kind:
        pairs only for a method with DPO, SFT records only for one with SFT."""
        stage, _ = self.producer(checkpoint.path)
        method = self.metrics(stage.name).get("method")
        if method is None:
            block = stage.params.get(stage.name.partition("@")[0])
            method = block.get("method") if isinstance(block, Mapping) else None
        data: dict[str, Artifact] = {}
        parents = []
        for entry in (*stage.deps, *stage.outs):
            path = entry["path"]
            if path == checkpoint.path or path.startswith(("src/", "schemas/", "stages/", "prompts/", "metrics/")):
                continue
            if self.is_checkpoint(path):
                parents.append(self.checkpoint(path))
                continue
            target = self.root / path
            files = sorted(target.rglob("*.parquet")) if target.is_dir() else [target]
            for file in files:
                try:
                    artifact = self.artifact_at(self.rel(file))
                except PublishError:
                    continue
                if artifact.kind.trains and method and artifact.kind.trains not in str(method):
                    continue
                data[artifact.path] = artifact
        return list(data.values()), parents, method

    # ---- git and DVC ---------------------------------------------------------------------

    def git_revision(self) -> tuple[str, bool]:
        """(HEAD's commit, whether tracked files differ from it); ("unknown", False) outside git."""
        def git(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=self.root, capture_output=True, text=True,
                                  check=True).stdout.strip()
        try:
            return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no"))
        except (OSError, subprocess.CalledProcessError):
            return "unknown", False

    def stale(self, stages: list[str]) -> dict[str, str]:
        """What `dvc status` reports for `stages` and the stages before them: stage -> what
        changed, in a few words; empty when all are up to date. One status for all."""
        from dvc.exceptions import DvcException
        from dvc.repo import Repo

        try:
            with Repo(str(self.root)) as repo:
                # a target is looked up from the working directory unless it names its dvc.yaml
                status = repo.status(targets=[f"{self.root / 'dvc.yaml'}:{s}" for s in stages], with_deps=True)
        except DvcException as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise PublishError(f"dvc status {' '.join(stages)}: {first}") from e
        out = {}
        for name, changes in status.items():
            what = []
            for change in changes:
                if isinstance(change, str):
                    what.append(change)
                    continue
                for key, value in change.items():
                    items = []
                    for path, state in (value or {}).items():
                        items += ([f"{path}: {', '.join(state)}"] if isinstance(state, Mapping) else [path])
                    what.append(f"{key} " + ", ".join(items[:3]) + (" ..." if len(items) > 3 else ""))
            out[name.rsplit(":", 1)[-1]] = "; ".join(what)  # DVC names them "<dvc.yaml>:<stage>"
        return out
