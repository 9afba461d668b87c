"""From artifact names to a Hub repo: check, plan the folder, write it, print it, or push it.

A plan is checked before anything leaves the machine: the repo id's form, the
token (for a push), every artifact against its schema, and, outside `dvc repro`,
`dvc status` of the stage that wrote it and the stages before it. Then the repo
folder: one config per artifact (the parquet file byte for byte) or the
checkpoint's files, and the card. A push asks the Hub what the repo holds (one
read, a few bounded tries), and commits only when the card's fingerprint or a
file differs, through huggingface_hub (`create_repo`, `create_commit`).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from honing.artifacts.validation import ArtifactError
from honing.publish import PublishError
from honing.publish.cards import DatasetEntry, ModelEntry, dataset_card, model_card, provenance, schema_info
from honing.publish.lineage import PublishLock, dataset_links, md5_of, model_links
from honing.publish.project import Artifact, Checkpoint, Project

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
GIT_PLACEHOLDER = "<git revision>"


@dataclass(frozen=True)
class Options:
    license: str = "apache-2.0"
    private: bool = True
    endpoint: str | None = None  # None: huggingface_hub's (HF_ENDPOINT or https://huggingface.co)
    check_stale: bool = True  # `dvc status`; off inside `dvc repro`, which has just made the deps fresh
    timeout_s: float = 3.0  # per request of that first read (a repo's info is small)
    attempts: int = 3  # tries of the first request before the endpoint counts as unreachable


@dataclass
class Plan:
    repo_id: str
    repo_type: str  # dataset | model
    files: dict[str, Path]  # path in repo -> local file (README.md excluded)
    hashes: dict[str, str]  # path in repo -> sha256
    card: str
    fingerprint: str
    message: str
    items: dict[str, dict[str, Any]]  # publish.lock.json items
    order: tuple[int, int] = (0, 0)  # lineage order: parents before children

    @property
    def size(self) -> int:
        return len(self.card.encode()) + sum(p.stat().st_size for p in self.files.values())


@dataclass
class Outcome:
    plan: Plan
    revision: str
    pushed: list[str] = field(default_factory=list)  # paths committed (empty: unchanged)
    deleted: list[str] = field(default_factory=list)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_repo_id(repo_id: str) -> str:
    if not REPO_ID.match(repo_id or "") or ".." in repo_id or "--" in repo_id or repo_id.endswith((".", ".git")):
        raise PublishError(f"repo id {repo_id!r} is malformed: expected <owner>/<name> (letters, digits, '-', '_', "
                           "'.'; no '--' or '..'); nothing pushed")
    return repo_id


def token_from_env() -> str:
    token = os.environ.get("HF_TOKEN", "").strip()
    if not token:
        raise PublishError("HF_TOKEN is not set: export a Hub token with write access "
                           "(https://huggingface.co/settings/tokens); nothing pushed")
    return token


# ---- planning ---------------------------------------------------------------------------------


def plan(project: Project, lock: PublishLock, schemas: Mapping[str, Any], repo_id: str, specs: list[str],
         options: Options = Options()) -> Plan:
    """Everything a publish of `specs` to `repo_id` would write, after every check."""
    check_repo_id(repo_id)
    if not specs:
        raise PublishError("nothing to publish: name at least one artifact or checkpoint")
    items = [project.resolve(s) for s in specs]
    models = [i for i in items if isinstance(i, Checkpoint)]
    if models and len(items) > 1:
        raise PublishError(f"{', '.join(specs)}: a checkpoint goes to a model repo of its own; "
                           "publish it and the datasets in separate calls")
    for item in items:
        if not (project.root / item.path).exists():
            raise PublishError(f"{item.path}: no such file (run `dvc repro` for the stage that writes it)")
    if options.check_stale:
        stages = {item.path: project.producer(item.path)[0].name for item in items}
        stale = project.stale(sorted(set(stages.values())))
        for path, stage in stages.items():
            behind = [s for s in project.upstream(stage) if s in stale]
            if behind:
                what = "; ".join(f"{s} ({stale[s]})" for s in behind[:2]) + (" ..." if len(behind) > 2 else "")
                raise PublishError(f"{path}: DVC reports it stale: {what}; run `dvc repro {stage}` first; "
                                   "nothing pushed")
    return _model_plan(project, lock, repo_id, models[0], options) if models else \
        _dataset_plan(project, lock, schemas, repo_id, items, options)


def _dataset_plan(project, lock, schemas, repo_id, artifacts: list[Artifact], options: Options) -> Plan:
    import pyarrow.parquet as pq
    from datasets import Features

    from honing.artifacts.io import read_artifact

    if len({a.config for a in artifacts}) != len(artifacts):
        raise PublishError(f"{', '.join(a.name for a in artifacts)}: an artifact is named twice")
    entries, files = [], {}
    for a in artifacts:
        schema = schemas[a.kind.schema]
        try:
            frame = read_artifact(project.root / a.path, schema)
        except ArtifactError as e:
            first = e.failures[0].line(a.path) if e.failures else str(e).splitlines()[0]
            more = f" (and {len(e.failures) - 1} more)" if len(e.failures) > 1 else ""
            raise PublishError(f"{a.name} fails its schema {getattr(schema, '__name__', schema)}: {first}{more}; "
                               "nothing pushed") from None
        stage, out = project.producer(a.path)
        path = project.root / a.path
        name = f"{a.config}/{a.kind.split}-00000-of-00001.parquet"
        files[name] = path
        iterations = sorted(set(frame["iteration"].to_list())) if "iteration" in frame.columns else (
            [a.at] if a.at else [])
        entries.append(DatasetEntry(
            artifact=a, file=name, md5=md5_of(project, a), rows=frame.height, iterations=iterations,
            stage=stage.name, out=out, schema_name=getattr(schema, "__name__", a.kind.schema),
            schema=schema_info(schema), features=Features.from_arrow_schema(pq.read_schema(path))._to_yaml_list(),
            num_bytes=pq.read_table(path).nbytes, size=path.stat().st_size,
            links=dataset_links(project, lock, a)))
    prov = provenance(project, [e.stage for e in entries])
    hashes = {n: sha256(p) for n, p in files.items()}

    def card(git: str, fingerprint: str) -> str:
        return dataset_card(repo_id, options.license, entries, prov, git_revision=git, fingerprint=fingerprint,
                            files=hashes)

    fingerprint = _fingerprint(card(GIT_PLACEHOLDER, ""), hashes)
    message = "honing publish " + ", ".join(f"{e.artifact.name} (md5 {e.md5[:8]})" for e in entries) + \
        f" at {prov.git_revision[:12]}"
    order = max(project.order[e.stage] for e in entries)
    return Plan(repo_id, "dataset", files, hashes, card(prov.git_revision, fingerprint), fingerprint, message,
                {e.artifact.path: {"name": e.artifact.name, "md5": e.md5, "config": e.artifact.config}
                 for e in entries}, (order, 0))


REQUIRED = {
    "config.json": lambda names: "config.json" in names,
    "safetensors weights": lambda names: any(n.endswith(".safetensors") for n in names),
    "a tokenizer": lambda names: bool({"tokenizer.json", "tokenizer.model"} & set(names)),
}


def _model_plan(project, lock, repo_id, checkpoint: Checkpoint, options: Options) -> Plan:
    import json

    root = project.root / checkpoint.path
    files = {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*"))
             if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)}
    files.pop("README.md", None)
    missing = [what for what, ok in REQUIRED.items() if not ok(files)]
    config = json.loads((root / "tokenizer_config.json").read_text()) if "tokenizer_config.json" in files else {}
    if "chat_template.jinja" not in files and not config.get("chat_template"):
        missing.append("a chat template")
    if missing:
        raise PublishError(f"{checkpoint.path}: not a complete checkpoint (no {', '.join(missing)}); nothing pushed")
    stage, out = project.producer(checkpoint.path)
    evaluation = {}
    for name, s in project.stages.items():  # the stages that read this checkpoint and report accuracy
        if any(d["path"] == checkpoint.path for d in s.deps):
            metrics = project.metrics(name)
            if any(k.startswith("accuracy") for k in metrics):
                evaluation[name] = {k: v for k, v in metrics.items() if k != "calls"}
    entry = ModelEntry(checkpoint, out["md5"], stage.name, sorted(files), model_links(project, lock, checkpoint),
                       evaluation)
    prov = provenance(project, [stage.name])
    block = stage.params.get(stage.name.partition("@")[0])
    source = block.get("source") if isinstance(block, Mapping) else None
    base_source = source if isinstance(source, str) and REPO_ID.match(source) else None
    hashes = {n: sha256(p) for n, p in files.items()}

    def card(git: str, fingerprint: str) -> str:
        return model_card(repo_id, options.license, entry, prov, base_source=base_source, git_revision=git,
                          fingerprint=fingerprint, files=hashes)

    fingerprint = _fingerprint(card(GIT_PLACEHOLDER, ""), hashes)
    message = f"honing publish {checkpoint.label} (md5 {entry.md5[:8]}) at {prov.git_revision[:12]}"
    return Plan(repo_id, "model", files, hashes, card(prov.git_revision, fingerprint), fingerprint, message,
                {checkpoint.path: {"name": checkpoint.label, "md5": entry.md5}}, (project.order[stage.name], 1))


def _fingerprint(card: str, hashes: Mapping[str, str]) -> str:
    """What the repo holds, less the git revision: equal fingerprints, nothing to push."""
    h = hashlib.sha256(card.encode())
    for name, digest in sorted(hashes.items()):
        h.update(f"\n{name} {digest}".encode())
    return h.hexdigest()


# ---- writing and showing ----------------------------------------------------------------------


def write_folder(p: Plan, folder: str | Path) -> Path:
    """The repo's exact folder: README.md and every file at its path in the repo."""
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise PublishError(f"{folder}: not empty (--to-dir writes the repo's exact folder into an empty one)")
    for name, source in p.files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, folder / name)
    (folder / "README.md").write_text(p.card)
    return folder


def describe(p: Plan) -> str:
    """A dry run: the files, their sizes, the commit message."""
    rows = [("README.md", len(p.card.encode()))] + [(n, f.stat().st_size) for n, f in sorted(p.files.items())]
    width = max(len(n) for n, _ in rows)
    lines = [f"would push to {p.repo_type} repo {p.repo_id} ({len(rows)} files, {p.size:,} bytes; "
             "not compared with the Hub):"]
    lines += [f"  {n:<{width}}  {size:>12,} bytes" for n, size in rows]
    lines += [f"commit message: {p.message}", f"fingerprint: {p.fingerprint}"]
    return "\n".join(lines)


# ---- pushing ----------------------------------------------------------------------------------


@dataclass
class Remote:
    sha: str
    fingerprint: str | None
    hashes: dict[str, tuple[str | None, str | None]]  # path -> (git blob sha1, lfs sha256)
    recorded: list[str]  # the files the remote card says a publish wrote


def _blob_sha1(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def remote_state(api, p: Plan, options: Options) -> Remote | None:
    """What the repo holds now (None: no such repo). A few tries, then one line."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    started, error = time.monotonic(), None
    for attempt in range(options.attempts):
        if attempt:
            time.sleep(0.5 * 2 ** (attempt - 1))
        try:
            info = api.repo_info(p.repo_id, repo_type=p.repo_type, files_metadata=True, timeout=options.timeout_s)
        except RepositoryNotFoundError:
            return None
        except HfHubHTTPError as e:
            status = e.response.status_code if e.response is not None else None
            if status is not None and status < 500 and status not in (408, 429):
                raise PublishError(_http_line(api, p, e, status)) from None
            error = f"HTTP {status}"
        except (httpx2.TransportError, OSError) as e:
            error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
        else:
            card = info.card_data.to_dict() if info.card_data is not None else {}
            block = card.get("honing") or {}
            hashes = {s.rfilename: (s.blob_id, (s.lfs or {}).get("sha256") if isinstance(s.lfs, dict)
                                    else getattr(s.lfs, "sha256", None)) for s in info.siblings or []}
            return Remote(info.sha, block.get("fingerprint"), hashes, list((block.get("files") or {}).keys()))
    raise PublishError(f"cannot reach the Hub at {api.endpoint} ({error}; {options.attempts} tries in "
                       f"{time.monotonic() - started:.1f} s); nothing pushed")


def _http_line(api, p: Plan, e, status: int) -> str:
    server = (getattr(e, "server_message", None) or str(e)).strip().splitlines()[0]
    if status in (401, 403):
        return f"the Hub at {api.endpoint} refused HF_TOKEN for {p.repo_type} repo {p.repo_id} ({status}: {server})"
    return f"{p.repo_type} repo {p.repo_id}: the Hub answered {status} ({server})"


def push(p: Plan, api, lock: PublishLock, options: Options = Options()) -> Outcome:
    """Commit what differs from the repo (nothing when the fingerprints agree) and record
    the repo's revision in publish.lock.json."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete
    from huggingface_hub.errors import HfHubHTTPError

    remote = remote_state(api, p, options)
    known = lock.data["repos"].get(p.repo_id)
    changed = [n for n in sorted(p.files) if remote is None or not _same(remote, n, p)]
    if remote is not None and remote.fingerprint == p.fingerprint and not changed:
        revision = known["revision"] if known and known.get("items") == p.items else remote.sha
        lock.record(p.repo_id, p.repo_type, api.endpoint, revision, p.items)
        lock.save()
        return Outcome(p, revision)
    deleted = sorted(set(remote.recorded) - set(p.files)) if remote else []
    operations = [CommitOperationAdd(n, str(p.files[n])) for n in changed]
    operations += [CommitOperationAdd("README.md", p.card.encode())]
    operations += [CommitOperationDelete(n) for n in deleted]
    try:
        if remote is None:
            api.create_repo(p.repo_id, repo_type=p.repo_type, private=options.private, exist_ok=True)
        info = api.create_commit(p.repo_id, operations, commit_message=p.message, repo_type=p.repo_type,
                                 commit_description=f"fingerprint {p.fingerprint}",
                                 parent_commit=remote.sha if remote else None)
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else 0
        raise PublishError(_http_line(api, p, e, status)) from None
    # A card-only commit leaves the data where it was: links keep pointing at the data's revision.
    data_moved = bool(changed or deleted) or not known or known.get("items") != p.items
    revision = info.oid if data_moved else known["revision"]
    lock.record(p.repo_id, p.repo_type, api.endpoint, revision, p.items)
    lock.save()
    return Outcome(p, revision, changed + ["README.md"], deleted)


def _same(remote: Remote, name: str, p: Plan) -> bool:
    blob, lfs = remote.hashes.get(name, (None, None))
    return lfs == p.hashes[name] if lfs else blob is not None and blob == _blob_sha1(p.files[name])


def hub_api(endpoint: str | None, token: str):
    """huggingface_hub's client for `endpoint` (None: its default) with `token`."""
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint, token=token)


def publish_all(project: Project, lock: PublishLock, schemas: Mapping[str, Any], targets: list[tuple[str, list[str]]],
                api, options: Options = Options()) -> list[Outcome]:
    """Several repos, parents before children, so each card links those published before
    it; then every card once more, so a parent also links what came after it (a
    card-only commit, and only where the card changed). Everything is checked first:
    one bad target stops the whole publish before anything is sent."""
    specs = dict(targets)
    if len(specs) != len(targets):
        raise PublishError("a repo id is listed twice")
    plans = sorted((plan(project, lock, schemas, repo_id, s, options) for repo_id, s in targets),
                   key=lambda p: p.order)
    fresh = Options(**{**options.__dict__, "check_stale": False})  # checked just now
    outcomes: dict[str, Outcome] = {}
    for _ in range(2):
        for p in plans:
            outcome = push(plan(project, lock, schemas, p.repo_id, specs[p.repo_id], fresh), api, lock, options)
            if p.repo_id in outcomes:  # the second pass: what either pass pushed, the latest revision
                earlier = outcomes[p.repo_id]
                outcome.pushed = sorted(set(earlier.pushed) | set(outcome.pushed))
                outcome.deleted = sorted(set(earlier.deleted) | set(outcome.deleted))
            outcomes[p.repo_id] = outcome
    return [outcomes[p.repo_id] for p in plans]
