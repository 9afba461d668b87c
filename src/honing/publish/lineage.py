"""publish.lock.json: which Hub repo and revision holds which artifact, and the links
a card draws from it.

The file is small, git-tracked and written by every publish (the CLI and the
stage alike):

    {"version": 1,
     "repos": {"me/honing-it1-data": {
         "type": "dataset", "endpoint": "https://huggingface.co", "revision": "<commit>",
         "items": {"data/it1/build_sft/sft.parquet": {"name": "sft@it1", "md5": "...", "config": "sft_it1"}}}}}

A card links another repo only at the version it was published with: an entry
whose md5 differs from the artifact as dvc.lock has it now is not a link to it.

Links, both ways (the project's dvc.lock says who made what):
  dataset -> the checkpoint(s) that generated it       (generated_by)
  dataset -> the checkpoints trained on it              (trained)
  checkpoint -> the datasets it was trained on           (trained_on)
  checkpoint -> the checkpoint it started from           (parents)
  checkpoint -> the datasets it generated                (generated)
so base -> train_meta -> it1 -> it2 can be walked from either end.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from honing.publish import PublishError
from honing.publish.project import Artifact, Checkpoint, Project, file_md5

LOCK_NAME = "publish.lock.json"
HUB = "https://huggingface.co"


@dataclass(frozen=True)
class Link:
    """An artifact or checkpoint, and where it is published (repo_id None: not published
    at this version)."""

    name: str
    path: str
    md5: str
    repo_id: str | None = None
    repo_type: str | None = None
    revision: str | None = None
    config: str | None = None
    endpoint: str | None = None

    @property
    def url(self) -> str | None:
        if self.repo_id is None:
            return None
        prefix = "datasets/" if self.repo_type == "dataset" else ""
        return f"{(self.endpoint or HUB).rstrip('/')}/{prefix}{self.repo_id}/tree/{self.revision}"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and k != "endpoint"}

    def markdown(self) -> str:
        where = f"`{self.name}` (`{self.path}`, md5 `{self.md5}`)"
        if self.repo_id is None:
            return f"{where}: not published at this version"
        config = f", config `{self.config}`" if self.config else ""
        return f"{where}: [{self.repo_id}@{self.revision[:12]}]({self.url}){config}"


def md5_of(project: Project, item: Artifact | Checkpoint) -> str:
    """An artifact's file md5; a checkpoint's directory md5 as dvc.lock records it."""
    if isinstance(item, Artifact):
        return file_md5(project.root / item.path)
    _, out = project.producer(item.path)
    return out["md5"]


class PublishLock:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.data: dict[str, Any] = {"version": 1, "repos": {}}
        if self.path.is_file():
            try:
                self.data = json.loads(self.path.read_text())
            except json.JSONDecodeError as e:
                raise PublishError(f"{self.path}: not valid JSON ({e.msg} at line {e.lineno})") from e
            if not isinstance(self.data.get("repos"), dict):
                raise PublishError(f"{self.path}: expected {{'version': 1, 'repos': {{...}}}}")

    def record(self, repo_id: str, repo_type: str, endpoint: str, revision: str,
               items: dict[str, dict[str, Any]]) -> None:
        """`repo_id` now holds exactly `items` (path -> name, md5, config) at `revision`."""
        self.data["repos"][repo_id] = {"type": repo_type, "endpoint": endpoint, "revision": revision,
                                       "items": dict(sorted(items.items()))}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps({"version": 1, "repos": dict(sorted(self.data["repos"].items()))}, indent=2) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.path)

    def entries(self):
        """(repo_id, repo entry, path, item) for every published item."""
        for repo_id, repo in self.data["repos"].items():
            for path, item in repo["items"].items():
                yield repo_id, repo, path, item

    def link(self, name: str, path: str, md5: str) -> Link:
        """`path` at `md5`, with the repo that holds that version if one does."""
        for repo_id, repo, p, item in self.entries():
            if p == path and item.get("md5") == md5:
                return Link(name, path, md5, repo_id, repo["type"], repo["revision"], item.get("config"),
                            repo.get("endpoint"))
        return Link(name, path, md5)


@dataclass(frozen=True)
class DatasetLinks:
    generated_by: list[Link]
    trained: list[Link]


@dataclass(frozen=True)
class ModelLinks:
    trained_on: list[Link]
    parents: list[Link]
    generated: list[Link]
    method: str | None


def _published(project: Project, lock: PublishLock, repo_type: str):
    """Published items of a type that the current dvc.lock still knows, at their current md5."""
    seen = set()
    for _, repo, path, item in lock.entries():
        if repo["type"] != repo_type or path in seen or not (project.root / path).exists():
            continue
        seen.add(path)
        try:
            project.producer(path)
            thing = project.checkpoint(path) if repo_type == "model" else project.artifact_at(path)
            if md5_of(project, thing) == item.get("md5"):
                yield thing
        except PublishError:
            continue


def dataset_links(project: Project, lock: PublishLock, artifact: Artifact) -> DatasetLinks:
    stage, _ = project.producer(artifact.path)
    generated_by = [lock.link(c.label, c.path, md5_of(project, c)) for c in project.generated_by(stage.name)]
    trained = []
    for checkpoint in _published(project, lock, "model"):
        data, _, _ = project.trained_from(checkpoint)
        if any(a.path == artifact.path for a in data):
            trained.append(lock.link(checkpoint.label, checkpoint.path, md5_of(project, checkpoint)))
    return DatasetLinks(generated_by, trained)


def model_links(project: Project, lock: PublishLock, checkpoint: Checkpoint) -> ModelLinks:
    data, parents, method = project.trained_from(checkpoint)
    trained_on = [lock.link(a.name, a.path, md5_of(project, a)) for a in data]
    parent_links = [lock.link(c.label, c.path, md5_of(project, c)) for c in parents]
    generated = []
    for artifact in _published(project, lock, "dataset"):
        stage, _ = project.producer(artifact.path)
        if any(c.path == checkpoint.path for c in project.generated_by(stage.name)):
            generated.append(lock.link(artifact.name, artifact.path, md5_of(project, artifact)))
    return ModelLinks(trained_on, parent_links, sorted(generated, key=lambda link: link.path), method)
