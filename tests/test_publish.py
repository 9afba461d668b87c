"""`honing publish`: dataset and model repos with cards, provenance and lineage.

A module fixture builds a small git + DVC project shaped like the real pipeline
(base → meta_corpus → train_meta → it1 → it2, evaluate per checkpoint) whose stages
copy small artifacts written with `write_artifact` and tiny untrained checkpoints;
`dvc repro` runs it once, so dvc.lock, metrics and `dvc status` are DVC's own.

The Hub is the narrowest stand-in at the HTTP boundary: huggingface_hub's real
client (`HfApi`, `create_repo`, `create_commit`) over an httpx2 MockTransport that
answers repo info, repo create, YAML validation, preupload and commit, and keeps
every revision so that links can be checked against what a revision holds.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import httpx2
import huggingface_hub
import polars as pl
import pytest
import yaml
from huggingface_hub import DatasetCard, ModelCard
from huggingface_hub.utils._http import default_client_factory
from test_pipeline import dvc, git

from honing.artifacts.io import read_artifact, write_artifact
from honing.cli import main
from honing.micro.tinymodel import save_untrained
from honing.publish.lineage import LOCK_NAME, PublishLock
from honing.publish.project import Project
from honing.publish.push import Options, hub_api, publish_all
from schemas.registry import ARTIFACTS

ENDPOINT = "http://hub.test"
ITERATIONS = {"it1": "data/train_meta/model", "it2": "data/it1/train/model"}
CHECKPOINTS = {"base": "data/base/model", "train_meta": "data/train_meta/model",
               "it1": "data/it1/train/model", "it2": "data/it2/train/model"}


# ---- the stand-in Hub -----------------------------------------------------------------------


class Hub:
    """Repo info, repo create, validate-yaml, preupload and commit, as the Hub answers them."""

    def __init__(self):
        self.repos: dict[tuple[str, str], dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.down = False

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.host != "hub.test":  # huggingface_hub's own best-effort look-ups elsewhere
            return httpx2.Response(404)
        self.requests.append((request.method, request.url.path))
        if self.down:
            raise httpx2.ConnectError("[Errno 111] Connection refused", request=request)
        path, method = request.url.path, request.method
        if method == "POST" and path == "/api/repos/create":
            body = json.loads(request.content)
            key = (body.get("type", "model"), f"{body['organization']}/{body['name']}")
            if key in self.repos:
                return httpx2.Response(409, json={"error": "You already created this repo"})
            self.repos[key] = {"sha": None, "files": {}, "history": {}, "commits": []}
            return httpx2.Response(200, json={"url": f"{ENDPOINT}/{self.prefix(key[0])}{key[1]}"})
        if method == "POST" and path == "/api/validate-yaml":
            return httpx2.Response(200, json={"errors": [], "warnings": []})
        parts = path.split("/")  # /api/{type}s/{owner}/{name}[/revision/main | /preupload/main | /commit/main]
        if len(parts) < 5 or parts[1] != "api" or parts[2] not in ("models", "datasets"):
            return httpx2.Response(404, json={"error": f"not in the stand-in: {method} {path}"})
        repo = self.repos.get((parts[2][:-1], f"{parts[3]}/{parts[4]}"))
        if repo is None:
            return httpx2.Response(404, headers={"X-Error-Code": "RepoNotFound"},
                                   json={"error": "Repository not found"})
        rest = parts[5:]
        if method == "GET" and (not rest or rest[0] == "revision"):
            return httpx2.Response(200, json=self.info(f"{parts[3]}/{parts[4]}", repo))
        if method == "POST" and rest[0] == "preupload":
            files = json.loads(request.content)["files"]
            return httpx2.Response(200, json={"files": [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]})
        if method == "POST" and rest[0] == "commit":
            url = f"{ENDPOINT}/{self.prefix(parts[2][:-1])}{parts[3]}/{parts[4]}"
            return self.commit(repo, url, [json.loads(line) for line in request.content.splitlines() if line.strip()])
        return httpx2.Response(404, json={"error": f"not in the stand-in: {method} {path}"})

    @staticmethod
    def info(repo_id: str, repo: dict) -> dict:
        readme = repo["files"].get("README.md")
        card = yaml.safe_load(readme.decode().split("---\n")[1]) if readme else None
        return {"id": repo_id, "sha": repo["sha"], "private": True, "cardData": card, "siblings": [
            {"rfilename": name, "size": len(data), "blobId": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()}
            for name, data in sorted(repo["files"].items())]}

    @staticmethod
    def prefix(repo_type: str) -> str:
        return "" if repo_type == "model" else f"{repo_type}s/"

    @staticmethod
    def commit(repo: dict, url: str, lines: list[dict]) -> httpx2.Response:
        header = lines[0]["value"]
        if header.get("parentCommit") and header["parentCommit"] != repo["sha"]:
            return httpx2.Response(412, json={"error": "A commit has happened since. Please refresh and try again."})
        files = dict(repo["files"])
        for line in lines[1:]:
            if line["key"] == "file":
                files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
            elif line["key"] == "deletedFile":
                files.pop(line["value"]["path"], None)
        sha = hashlib.sha1(f"{repo['sha']}{sorted(files.items())}".encode()).hexdigest()
        repo.update(sha=sha, files=files)
        repo["history"][sha] = files
        repo["commits"].append({"sha": sha, "summary": header["summary"],
                                "paths": [line["value"]["path"] for line in lines[1:]]})
        return httpx2.Response(200, json={"commitOid": sha, "commitUrl": f"{url}/commit/{sha}", "success": True})

    def files(self, repo_type: str, repo_id: str, revision: str | None = None) -> dict[str, bytes]:
        repo = self.repos[(repo_type, repo_id)]
        return repo["history"][revision] if revision else repo["files"]

    def card(self, repo_type: str, repo_id: str, revision: str | None = None) -> dict:
        text = self.files(repo_type, repo_id, revision)["README.md"].decode()
        cls = DatasetCard if repo_type == "dataset" else ModelCard
        return cls(text).data.to_dict()

    def writes(self) -> list[tuple[str, str]]:
        return [(m, p) for m, p in self.requests if m != "GET"]


@pytest.fixture
def hub(monkeypatch, tmp_path):
    hub = Hub()
    huggingface_hub.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(hub)))
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_never_shown")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    yield hub
    huggingface_hub.set_client_factory(default_client_factory)


def publish(repo: Path, *args: str) -> int:
    return main(["publish", *args, "--project", str(repo), "--endpoint", ENDPOINT])


# ---- the project ----------------------------------------------------------------------------


def msgs(role: str, text: str) -> list[dict]:
    return [{"role": role, "content": text}]


def parsed_fields(n: int) -> dict[str, pl.Series]:
    """The step fields of parsed feedback (none here) and the critic's refinement (none)."""
    return {"refinement": pl.Series([None] * n, dtype=pl.String), "flagged_step": pl.Series([None] * n, dtype=pl.Int64),
            "quoted": pl.Series([None] * n, dtype=pl.String), "recomputed": pl.Series([None] * n, dtype=pl.Int64)}


def frames(at: str) -> dict[str, pl.DataFrame]:
    """Small artifacts of one iteration (or of the meta-skill step), schema-valid."""
    n = 4
    ids = [f"{at}-{i}" for i in range(n)]
    return {
        "feedback": pl.DataFrame({
            "id": ids, "prompt_id": [f"p{i}" for i in range(n)], "response": [f"answer {i}" for i in range(n)],
            "feedback": ["Step 1 is right. Verdict: correct"] * n, "verdict": ["correct", "incorrect"] * 2,
            "score": [9, 3, 8, 2], "weaknesses": [None, "a dropped carry", None, "a dropped carry"],
            "suggestions": [None, "carry the one", None, "carry the one"], "parse_error": [None] * n,
            **parsed_fields(n), "critic": [f"{ITERATIONS.get(at, 'data/base/model')}@abc"] * n,
            "iteration": [at] * n}),
        "refinements": pl.DataFrame({
            "id": [f"{i}-r0" for i in ids], "candidate_id": ids, "prompt_id": [f"p{i}" for i in range(n)],
            "prompt": [f"Ann has {i} coins ." for i in range(n)], "round": [0] * n,
            "response": [f"answer {i}" for i in range(n)], "feedback": ["Verdict: correct"] * n,
            "verdict": ["correct"] * n, "score": [9] * n, "weaknesses": [None] * n, "suggestions": [None] * n,
            "parse_error": [None] * n, **parsed_fields(n), "model": [ITERATIONS.get(at, "data/base/model")] * n,
            "iteration": [at] * n}),
        "sft": pl.DataFrame({
            "id": [f"{i}-sft" for i in ids], "prompt": [msgs("user", f"Ann has {i} coins .") for i in range(n)],
            "completion": [msgs("assistant", f"1. {i} coins") for i in range(n)], "kind": ["answer"] * n,
            "source_id": ids, "iteration": [at] * n}),
        "pairs": pl.DataFrame({
            "id": [f"{i}-pair" for i in ids], "prompt_id": [f"p{i}" for i in range(n)],
            "prompt": [msgs("user", f"Ann has {i} coins .") for i in range(n)],
            "chosen": [msgs("assistant", f"{i + 1}") for i in range(n)],
            "rejected": [msgs("assistant", f"{i + 2}") for i in range(n)],
            "chosen_score": [1.0] * n, "rejected_score": [0.0] * n, "margin": [1.0] * n, "iteration": [at] * n}),
    }


def meta_corpus() -> pl.DataFrame:
    n = 5
    return pl.DataFrame({
        "id": [f"m{i}" for i in range(n)], "prompt_id": [f"p{i}" for i in range(n)],
        "prompt": [f"Ann has {i} coins ." for i in range(n)], "response": [f"{i}" for i in range(n)],
        "response_source": ["policy_sampled", "gold", "noise", "policy_greedy", "noise"],
        "feedback": ["Step 1: wrong"] * n, "verdict": ["incorrect", "correct", "incorrect", "correct", "incorrect"],
        "score": [2, 10, 3, 9, 1], "weaknesses": ["carry"] * n, "suggestions": ["carry the one"] * n,
        "refinement": [f"{i} coins" for i in range(n)], "critic": ["oracle"] * n,
        "policy": ["data/base/model"] * n, "iteration": ["meta"] * n})


def evaluation(ck: str) -> pl.DataFrame:
    return pl.DataFrame({"id": [f"{ck}-e{i}" for i in range(3)], "prompt_id": ["q0", "q1", "q2"], "round": [0, 0, 1],
                         "response": ["1", "2", "3"], "verdict": ["correct", "incorrect", "correct"],
                         "correct": [True, False, True], "score": [8, 3, None], "model": [CHECKPOINTS[ck]] * 3,
                         "iteration": [ck] * 3})


def calls(requests: int, prompt: int, completion: int, cost: float = 0.0) -> dict:
    return {"requests": requests, "prompt_tokens": prompt, "completion_tokens": completion, "cost_usd": cost}


def copy(src: str, dst: str) -> str:
    return f"mkdir -p {Path(dst).parent} && cp -r {src} {dst}"


def dvc_yaml(repo: Path) -> dict:
    """The real pipeline's shape: the same paths, the same kind of deps, stages that copy."""
    it = "${key}"
    return {"stages": {
        "base": {"cmd": copy("fixtures/models/base", "data/base/model") + " && " +
                 copy("fixtures/metrics/base.json", "metrics/base.json"),
                 "deps": ["fixtures/models/base"], "params": ["base"], "outs": ["data/base/model"],
                 "metrics": [{"metrics/base.json": {"cache": False}}]},
        "meta_corpus": {"cmd": copy("fixtures/meta/corpus.parquet", "data/meta_corpus/corpus.parquet") + " && " +
                        copy("fixtures/metrics/meta_corpus.json", "metrics/meta_corpus.json"),
                        "deps": ["fixtures/meta/corpus.parquet", "data/base/model"],
                        "params": ["meta_corpus", "policy", "critic"], "outs": ["data/meta_corpus"],
                        "metrics": [{"metrics/meta_corpus.json": {"cache": False}}]},
        "train_meta": {"cmd": " && ".join([copy("fixtures/meta/sft.parquet", "data/train_meta/sft.parquet"),
                                           copy("fixtures/models/train_meta", "data/train_meta/model"),
                                           copy("fixtures/metrics/train_meta.json", "metrics/train_meta.json")]),
                       "deps": ["fixtures/meta/sft.parquet", "fixtures/models/train_meta",
                                "data/meta_corpus/corpus.parquet", "data/base/model"],
                       "params": ["train_meta"], "outs": ["data/train_meta/sft.parquet", "data/train_meta/model"],
                       "metrics": [{"metrics/train_meta.json": {"cache": False}}]},
        **{stage: {"foreach": "${iterations}", "do": {
            "cmd": " && ".join([copy(f"fixtures/{it}/{src}", f"data/{it}/{stage}/{src}"),
                                copy(f"fixtures/metrics/{it}/{stage}.json", f"metrics/{it}/{stage}.json")]),
            "deps": [f"fixtures/{it}/{src}", *extra],
            "params": [stage, *(["policy"] if stage in ("critique", "refine") else []),
                       f"iterations.{it}.init", f"iterations.{it}.{stage}"],
            "outs": [f"data/{it}/{stage}"], "metrics": [{f"metrics/{it}/{stage}.json": {"cache": False}}]}}
           for stage, src, extra in [
               ("critique", "feedback.parquet", ["${item.init}"]),
               ("refine", "refinements.parquet", [f"data/{it}/critique", "${item.init}"]),
               ("build_sft", "sft.parquet", [f"data/{it}/refine"]),
               ("build_pairs", "pairs.parquet", [f"data/{it}/refine"])]},
        "train": {"foreach": "${iterations}", "do": {
            "cmd": " && ".join([copy(f"fixtures/models/{it}", f"data/{it}/train/model"),
                                copy(f"fixtures/metrics/{it}/train.json", f"metrics/{it}/train.json")]),
            "deps": [f"fixtures/models/{it}", "${item.init}", f"data/{it}/build_sft", f"data/{it}/build_pairs"],
            "params": ["train", f"iterations.{it}.init", f"iterations.{it}.train"],
            "outs": [f"data/{it}/train/model"], "metrics": [{f"metrics/{it}/train.json": {"cache": False}}]}},
        "evaluate": {"foreach": "${checkpoints}", "do": {
            "cmd": " && ".join([copy(f"fixtures/{it}/rows.parquet", f"data/{it}/evaluate/rows.parquet"),
                                copy(f"fixtures/metrics/evaluate/{it}.json", f"metrics/evaluate/{it}.json")]),
            "deps": [f"fixtures/{it}/rows.parquet", "${item}"], "params": ["evaluate", f"checkpoints.{it}"],
            "outs": [f"data/{it}/evaluate"], "metrics": [{f"metrics/evaluate/{it}.json": {"cache": False}}]}},
        "publish": PUBLISH_STAGE,
    }}


# The project's publish stage, its code deps aside (this project has no code).
PUBLISH_STAGE = {"foreach": "${publish}", "do": {
    "cmd": "python -m stages.publish ${key}", "deps": ["data"], "params": ["publish.${key}", "checkpoints"],
    "metrics": [{"metrics/publish/${key}.json": {"cache": False}}]}}

PARAMS = {
    "policy": {"backend": "transformers", "batch_size": 8},
    "critic": {"backend": "oracle"},
    "base": {"source": "micro", "seed": 0},
    "meta_corpus": {"num_samples": 2, "seed": 0},
    "train_meta": {"method": "sft", "sft": {"learning_rate": 0.001}},
    "iterations": {it: {"init": init, "critique": {}, "refine": {}, "build_sft": {}, "build_pairs": {}, "train": {}}
                   for it, init in ITERATIONS.items()},
    "critique": {"critic": {"backend": "self"}, "max_tokens": 160},
    "refine": {"rounds": 1, "max_tokens": 96},
    "build_sft": {"max_answers_per_prompt": 1},
    "build_pairs": {"min_margin": 1.0},
    "train": {"method": "sft", "sft": {"learning_rate": 0.0005}},
    "checkpoints": CHECKPOINTS,
    "evaluate": {"rounds": 2},
    "publish": {},
}


def write_fixtures(repo: Path) -> None:
    fx = repo / "fixtures"
    for seed, ck in enumerate(CHECKPOINTS):
        save_untrained(fx / "models" / ck, seed=seed)
    write_artifact(meta_corpus(), fx / "meta/corpus.parquet", ARTIFACTS["meta_corpus"])
    write_artifact(frames("meta")["sft"].with_columns(iteration=pl.lit("train_meta")), fx / "meta/sft.parquet",
                   ARTIFACTS["sft"])
    metrics = {"base.json": {"parameters": 1234},
               "meta_corpus.json": {"rows": 5, "critic": "oracle", "calls": calls(10, 300, 200)},
               "train_meta.json": {"method": "sft", "sft_records": 4}}
    for it in ITERATIONS:
        for name, frame in frames(it).items():
            write_artifact(frame, fx / it / f"{name}.parquet", ARTIFACTS[name])
        metrics |= {f"{it}/critique.json": {"rows": 4, "critic": f"{ITERATIONS[it]}@abc", "calls": calls(4, 120, 80)},
                    f"{it}/refine.json": {"rounds": 1, "calls": calls(2, 60, 40, 0.0125)},
                    f"{it}/build_sft.json": {"records": 4}, f"{it}/build_pairs.json": {"pairs": 4},
                    f"{it}/train.json": {"method": "sft", "sft_records": 4}}
    for ck in CHECKPOINTS:
        write_artifact(evaluation(ck), fx / ck / "rows.parquet", ARTIFACTS["evaluation"])
        metrics[f"evaluate/{ck}.json"] = {"accuracy_direct": 0.5, "accuracy_refined": 0.75,
                                          "accuracy_per_round": [0.5, 0.75], "calls": calls(3, 30, 20)}
    for name, data in metrics.items():
        (fx / "metrics" / name).parent.mkdir(parents=True, exist_ok=True)
        (fx / "metrics" / name).write_text(json.dumps(data))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    repo = tmp_path_factory.mktemp("publish") / "repo"
    repo.mkdir()
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "DVC_NO_ANALYTICS": "1", "NO_COLOR": "1",
           "HOME": str(repo.parent)}
    write_fixtures(repo)
    (repo / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    (repo / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml(repo), sort_keys=False))
    git(repo, "init", "-q", env=env)
    dvc(repo, "init", "-q", env=env)
    started = time.monotonic()
    dvc(repo, "repro", "-q", env=env)
    print(f"\nfixture project: dvc repro {time.monotonic() - started:.1f} s", file=sys.stderr)
    git(repo, "add", "-A", env=env)
    git(repo, "commit", "-q", "-m", "fixture project", env=env)
    return repo, env


@pytest.fixture
def repo(project, tmp_path):
    """A fresh copy of the fixture project for one test (its lineage file starts empty)."""
    return Path(shutil.copytree(project[0], tmp_path / "repo", symlinks=True))


def lock_out(repo: Path, stage: str, path: str) -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"][stage]
    return next(o["md5"] for o in lock["outs"] if o["path"] == path)


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD", env={"PATH": "/usr/bin:/bin"}).stdout.strip()


def load(folder: Path, config: str, split: str, cache: Path):
    import datasets

    return datasets.load_dataset(str(folder), config, split=split, cache_dir=str(cache))


def unpack(files: dict[str, bytes], folder: Path) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


DATASET = ["sft@it1", "pairs@it1", "feedback@it1", "refinements@it1", "meta_corpus", "evaluate@it2"]


# ---- tests ------------------------------------------------------------------------------------


def test_the_folder_loads_with_datasets_and_gives_the_artifacts_rows(repo, tmp_path, capsys):
    out = tmp_path / "folder"
    assert publish(repo, *DATASET, "--repo", "me/honing-data", "--to-dir", str(out)) == 0
    assert "7 files" in capsys.readouterr().out
    project = Project(repo)
    for spec in DATASET:
        artifact = project.resolve(spec)
        split = "test" if spec.startswith("evaluate") else "train"
        loaded = load(out, artifact.config, split, tmp_path / "cache")
        expected = read_artifact(repo / artifact.path, ARTIFACTS[artifact.kind.schema])
        assert loaded.column_names == expected.columns
        assert loaded.to_list() == expected.to_dicts(), spec
        # the file is the pipeline's own, byte for byte
        file = out / artifact.config / f"{split}-00000-of-00001.parquet"
        assert file.read_bytes() == (repo / artifact.path).read_bytes()
    # TRL's formats, as TRL reads them
    sft = load(out, "sft_it1", "train", tmp_path / "cache")
    assert "role" in str(sft.features["prompt"]) and "completion" in sft.features
    assert {"prompt", "chosen", "rejected"} <= set(load(out, "pairs_it1", "train", tmp_path / "cache").column_names)


def test_trl_trains_on_the_published_configs_as_they_load(repo, tmp_path):
    """What the card promises: SFTTrainer and DPOTrainer take the configs as they are."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    out = tmp_path / "folder"
    assert publish(repo, "sft@it1", "pairs@it1", "--repo", "me/it1-data", "--to-dir", str(out)) == 0
    model = repo / "data/train_meta/model"
    common = {"max_steps": 1, "use_cpu": True, "bf16": False, "report_to": [], "per_device_train_batch_size": 2}
    for trainer, config, name in ((SFTTrainer, SFTConfig, "sft_it1"), (DPOTrainer, DPOConfig, "pairs_it1")):
        result = trainer(model=AutoModelForCausalLM.from_pretrained(model),
                         processing_class=AutoTokenizer.from_pretrained(model),
                         train_dataset=load(out, name, "train", tmp_path / "cache"),
                         args=config(output_dir=str(tmp_path / name), **common)).train()
        assert result.global_step == 1 and result.training_loss > 0, name


def test_the_card_parses_and_carries_every_provenance_field(repo, tmp_path):
    out = tmp_path / "folder"
    assert publish(repo, "sft@it1", "pairs@it1", "meta_corpus", "--repo", "me/honing-data", "--to-dir", str(out)) == 0
    card = DatasetCard.load(out / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "apache-2.0" and data["task_categories"] == ["text-generation"]
    assert data["size_categories"] == ["n<1K"] and {"honing", "trl", "sft", "dpo"} <= set(data["tags"])
    assert [c["config_name"] for c in data["configs"]] == ["sft_it1", "pairs_it1", "meta_corpus"]
    assert data["configs"][0]["data_files"] == [{"split": "train", "path": "sft_it1/*.parquet"}]
    info = {i["config_name"]: i for i in data["dataset_info"]}
    assert [f["name"] for f in info["pairs_it1"]["features"]][:4] == ["id", "prompt_id", "prompt", "chosen"]
    assert info["sft_it1"]["splits"] == [{"name": "train", "num_bytes": info["sft_it1"]["dataset_size"],
                                          "num_examples": 4}]

    honing = data["honing"]
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert honing["git_revision"] == head(repo) and honing["git_dirty"] is False
    sft = honing["artifacts"]["sft@it1"]
    assert sft["dvc_out"] == "data/it1/build_sft" and sft["dvc_md5"] == lock_out(repo, "build_sft@it1", sft["dvc_out"])
    assert sft["md5"] == hashlib.md5((repo / "data/it1/build_sft/sft.parquet").read_bytes()).hexdigest()
    assert sft["stage"] == "build_sft@it1" and sft["rows"] == 4 and sft["iteration"] == ["it1"]
    assert honing["artifacts"]["meta_corpus"]["dvc_md5"] == lock_out(repo, "meta_corpus", "data/meta_corpus")
    # the schema: every column, its type and its checks
    assert sft["schema"]["name"] == "SFTRecords"
    assert list(sft["schema"]["columns"]) == ["id", "prompt", "completion", "kind", "source_id", "iteration"]
    assert sft["schema"]["columns"]["kind"]["checks"] == ["isin(allowed_values=['answer', 'feedback', 'refinement'])"]
    assert sft["schema"]["columns"]["id"]["unique"] is True
    # every stage that led to it, with its params as dvc.lock has them
    assert list(honing["stages"]) == ["base", "meta_corpus", "train_meta", "critique@it1", "refine@it1",
                                      "build_sft@it1", "build_pairs@it1"]
    for name, stage in honing["stages"].items():
        assert stage["params"] == lock[name]["params"]["params.yaml"], name
        assert stage["cmd"] == lock[name]["cmd"]
    # models and backends, the critic, tokens and cost (from metrics/)
    roles = {(r["stage"], r["role"]): r for r in honing["models"]}
    assert roles[("critique@it1", "policy")]["model"] == "model@train_meta"
    assert roles[("critique@it1", "policy")]["backend"] == "transformers"
    assert roles[("critique@it1", "critic")]["model"] == "data/train_meta/model@abc"
    assert roles[("critique@it1", "critic")]["backend"] == "self"
    assert (roles[("meta_corpus", "critic")]["model"], roles[("meta_corpus", "critic")]["backend"]) == (
        "oracle", "oracle")
    assert honing["calls"] == {"requests": 16, "prompt_tokens": 480, "completion_tokens": 320, "cost_usd": 0.0125}
    # lineage: the checkpoint that generated it (not published yet)
    assert sft["generated_by"] == [{"name": "model@train_meta", "path": "data/train_meta/model",
                                    "md5": lock_out(repo, "train_meta", "data/train_meta/model")}]
    body = card.text
    for needle in ("load_dataset(\"me/honing-data\", \"sft_it1\"", "SFTTrainer", "DPOTrainer", "build_sft@it1",
                   head(repo), sft["md5"], sft["dvc_md5"], "| `kind` |", "est. cost", "0.0125", "model@train_meta"):
        assert needle in body, needle


def test_the_push_goes_through_the_real_client_and_the_files_load_back(repo, hub, tmp_path, capsys):
    assert publish(repo, "sft@it1", "pairs@it1", "--repo", "me/it1-data") == 0
    line = capsys.readouterr().out.strip()
    sha = hub.repos[("dataset", "me/it1-data")]["sha"]
    assert line == f"dataset repo me/it1-data: pushed 3 file(s); revision {sha} (recorded in {LOCK_NAME})"
    assert hub.requests == [("GET", "/api/datasets/me/it1-data"), ("POST", "/api/repos/create"),
                            ("POST", "/api/validate-yaml"), ("POST", "/api/datasets/me/it1-data/preupload/main"),
                            ("POST", "/api/datasets/me/it1-data/commit/main")]
    folder = unpack(hub.files("dataset", "me/it1-data"), tmp_path / "arrived")
    for spec, config in (("sft@it1", "sft_it1"), ("pairs@it1", "pairs_it1")):
        artifact = Project(repo).resolve(spec)
        expected = read_artifact(repo / artifact.path, ARTIFACTS[artifact.kind.schema])
        assert load(folder, config, "train", tmp_path / "cache").to_list() == expected.to_dicts()
    recorded = json.loads((repo / LOCK_NAME).read_text())["repos"]["me/it1-data"]
    assert recorded["revision"] == sha and recorded["type"] == "dataset"
    assert recorded["items"]["data/it1/build_sft/sft.parquet"]["config"] == "sft_it1"
    assert "hf_test_token_never_shown" not in (repo / LOCK_NAME).read_text() + "".join(
        data.decode(errors="replace") for data in hub.files("dataset", "me/it1-data").values())


def test_republishing_sends_no_commit(repo, hub, capsys):
    assert publish(repo, "sft@it1", "--repo", "me/it1-data") == 0
    first = hub.repos[("dataset", "me/it1-data")]["sha"]
    hub.requests.clear()
    # a new git commit that touches no artifact: the card's git revision alone does not count
    (repo / "NOTES.txt").write_text("unrelated\n")
    git(repo, "add", "NOTES.txt", env={"PATH": "/usr/bin:/bin"})
    git(repo, "commit", "-q", "-m", "unrelated", env={"PATH": "/usr/bin:/bin"})
    capsys.readouterr()
    assert publish(repo, "sft@it1", "--repo", "me/it1-data") == 0
    assert "unchanged, nothing pushed" in capsys.readouterr().out
    assert hub.requests == [("GET", "/api/datasets/me/it1-data")]
    assert len(hub.repos[("dataset", "me/it1-data")]["commits"]) == 1
    assert json.loads((repo / LOCK_NAME).read_text())["repos"]["me/it1-data"]["revision"] == first
    # a different set of artifacts is a change: the new file and the card, nothing else
    assert publish(repo, "sft@it1", "pairs@it1", "--repo", "me/it1-data") == 0
    assert hub.repos[("dataset", "me/it1-data")]["commits"][-1]["paths"] == [
        "pairs_it1/train-00000-of-00001.parquet", "README.md"]


def test_a_checkpoint_goes_to_a_model_repo_that_transformers_loads(repo, hub, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert publish(repo, "model@it1", "--repo", "me/it1") == 0
    files = hub.files("model", "me/it1")
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= set(files)
    folder = unpack(files, tmp_path / "model")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template and AutoModelForCausalLM.from_pretrained(folder).num_parameters() > 0
    card = ModelCard.load(folder / "README.md")
    honing = card.data.to_dict()["honing"]
    assert honing["checkpoint"] == {
        "name": "it1", "path": "data/it1/train/model", "stage": "train@it1", "method": "sft",
        "dvc_md5": lock_out(repo, "train@it1", "data/it1/train/model"), "files": sorted(set(files) - {"README.md"})}
    # method sft: the SFT records trained it, the pairs beside them did not
    assert [link["name"] for link in honing["trained_on"]] == ["sft@it1"]
    assert honing["evaluation"]["evaluate@it1"]["accuracy_refined"] == 0.75
    assert "AutoModelForCausalLM.from_pretrained(\"me/it1\")" in card.text


def test_lineage_links_resolve_both_ways(repo, hub):
    targets = [("me/it2", ["model@it2"]), ("me/it2-data", ["sft@it2", "pairs@it2"]), ("me/it1", ["model@it1"]),
               ("me/it1-data", ["sft@it1", "pairs@it1", "feedback@it1", "refinements@it1"]),
               ("me/train-meta", ["model@train_meta"]), ("me/meta", ["meta_corpus", "sft@train_meta"]),
               ("me/base", ["model@base"])]  # any order: the DAG orders them
    project = Project(repo)
    lock = PublishLock(repo / LOCK_NAME)
    outcomes = publish_all(project, lock, ARTIFACTS, targets, hub_api(ENDPOINT, "hf_x"), Options(endpoint=ENDPOINT))
    assert [o.plan.repo_id for o in outcomes] == ["me/base", "me/meta", "me/train-meta", "me/it1-data", "me/it1",
                                                  "me/it2-data", "me/it2"]
    types = {o.plan.repo_id: o.plan.repo_type for o in outcomes}

    def resolve(link: dict) -> dict:
        """The linked repo at the linked revision holds the linked artifact at its md5."""
        files = hub.files(types[link["repo_id"]], link["repo_id"], link["revision"])
        card = hub.card(types[link["repo_id"]], link["repo_id"], link["revision"])["honing"]
        if "config" in link:
            assert any(name.startswith(link["config"] + "/") for name in files)
            assert card["artifacts"][link["name"]]["md5"] == link["md5"]
        else:
            assert "model.safetensors" in files and card["checkpoint"]["dvc_md5"] == link["md5"]
        return link

    # backwards: it2 -> the data that trained it -> the checkpoint that generated that data -> ... base
    walk, model = [], "me/it2"
    while True:
        walk.append(model)
        card = hub.card("model", model)
        parents = [resolve(link) for link in card["honing"]["parents"]]
        if not parents:
            break
        (sft,) = [resolve(link) for link in card["honing"]["trained_on"] if link["name"].startswith("sft@")]
        assert sft["repo_id"] in card["datasets"]  # the Hub's own "trained on" link
        data = hub.card("dataset", sft["repo_id"])["honing"]["artifacts"][sft["name"]]
        (generator,) = [resolve(link) for link in data["generated_by"]]
        assert generator["repo_id"] == parents[0]["repo_id"] == card["base_model"][0]
        model = generator["repo_id"]
    assert walk == ["me/it2", "me/it1", "me/train-meta", "me/base"]

    # forwards: base -> the data it generated -> the checkpoint trained on it -> ... it2
    walk, model = [], "me/base"
    while model:
        walk.append(model)
        generated = [resolve(link) for link in hub.card("model", model)["honing"]["generated"]
                     if link["name"].startswith("sft@")]
        trained = [resolve(link) for g in generated
                   for link in hub.card("dataset", g["repo_id"])["honing"]["artifacts"][g["name"]]["trained"]]
        model = trained[0]["repo_id"] if trained else None
    assert walk == ["me/base", "me/train-meta", "me/it1", "me/it2"]

    # the second pass wrote cards only, and a publish now changes nothing
    for o in outcomes:
        commits = hub.repos[(o.plan.repo_type, o.plan.repo_id)]["commits"]
        assert all(c["paths"] == ["README.md"] for c in commits[1:]), (o.plan.repo_id, commits)
    before = {key: len(r["commits"]) for key, r in hub.repos.items()}
    publish_all(project, PublishLock(repo / LOCK_NAME), ARTIFACTS, targets, hub_api(ENDPOINT, "hf_x"),
                Options(endpoint=ENDPOINT))
    assert {key: len(r["commits"]) for key, r in hub.repos.items()} == before


def test_the_publish_stage_does_the_same_inside_dvc(repo, hub, monkeypatch):
    from stages import publish as stage

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["publish"] = {"hub": {"endpoint": ENDPOINT, "repos": {"me/it1": ["model@it1"],
                                                                  "me/it1-data": ["sft@it1", "pairs@it1"]}}}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(repo)
    stage.run(["hub"])
    metrics = json.loads((repo / "metrics/publish/hub.json").read_text())["repos"]
    assert sorted(metrics) == ["me/it1", "me/it1-data"] and all(m["pushed"] for m in metrics.values())
    assert metrics["me/it1"]["revision"] == json.loads((repo / LOCK_NAME).read_text())["repos"]["me/it1"]["revision"]
    link = hub.card("model", "me/it1")["honing"]["trained_on"][0]
    assert (link["name"], link["repo_id"], link["config"]) == ("sft@it1", "me/it1-data", "sft_it1")


def test_the_pipeline_defines_the_publish_stage_as_tested_here_and_none_by_default():
    root = Path(__file__).resolve().parents[1]
    real = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["publish"]
    assert real["foreach"] == PUBLISH_STAGE["foreach"] and "data" in real["do"]["deps"]
    assert {k: v for k, v in real["do"].items() if k != "deps"} == {
        k: v for k, v in PUBLISH_STAGE["do"].items() if k != "deps"}
    assert yaml.safe_load((root / "params.yaml").read_text())["publish"] == {}


def test_a_dry_run_prints_files_sizes_and_message_and_sends_nothing(repo, hub, capsys, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    assert publish(repo, "sft@it1", "--repo", "me/it1-data", "--dry-run") == 0
    out = capsys.readouterr().out
    size = (repo / "data/it1/build_sft/sft.parquet").stat().st_size
    assert "would push to dataset repo me/it1-data (2 files" in out
    assert f"sft_it1/train-00000-of-00001.parquet  {size:>12,} bytes" in out
    assert "commit message: honing publish sft@it1 (md5 " in out
    assert hub.requests == [] and not (repo / LOCK_NAME).exists()


def stale(repo: Path) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["refine"]["rounds"] = 2
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def bad_schema(repo: Path) -> None:
    """An artifact DVC knows and calls fresh, that fails its schema: a score of 11."""
    path = repo / "data/it2/critique/feedback.parquet"
    pl.read_parquet(path).with_columns(score=pl.lit(11, pl.Int64)).write_parquet(path)
    dvc(repo, "commit", "-f", "-q", "critique@it2", env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})


BAD = {  # name -> (prepare the repo, the args, what the line says)
    "missing token": (None, ["sft@it1", "--repo", "me/x"], "HF_TOKEN is not set"),
    "malformed repo id": (None, ["sft@it1", "--repo", "me/bad--name"], "repo id 'me/bad--name' is malformed"),
    "repo id without owner": (None, ["sft@it1", "--repo", "honing-data"], "repo id 'honing-data' is malformed"),
    "fails its schema": (bad_schema, ["feedback@it2", "--repo", "me/x"],
                         "feedback@it2 fails its schema Feedback: data/it2/critique/feedback.parquet: row id 'it2-0'"),
    "stale": (stale, ["sft@it1", "--repo", "me/x"], "data/it1/build_sft/sft.parquet: DVC reports it stale: refine@it1"),
    "unreachable endpoint": (None, ["sft@it1", "--repo", "me/x"], f"cannot reach the Hub at {ENDPOINT} (ConnectError"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_input_stops_with_one_line_and_sends_nothing(case, repo, hub, capsys, monkeypatch):
    prepare, args, says = BAD[case]
    if prepare:
        prepare(repo)
    if case == "missing token":
        monkeypatch.delenv("HF_TOKEN")
    hub.down = case == "unreachable endpoint"
    capsys.readouterr()
    started = time.monotonic()
    assert publish(repo, *args) == 1
    elapsed = time.monotonic() - started
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"honing publish: {says}"), err
    assert "nothing pushed" in lines[0]
    assert "hf_test_token_never_shown" not in out + err
    assert hub.writes() == [] and hub.repos == {} and not (repo / LOCK_NAME).exists()
    if case == "unreachable endpoint":  # a few quick tries, not the client's 23 s of backoff
        assert hub.requests == [("GET", "/api/datasets/me/x")] * 3 and elapsed < 5, elapsed
    else:
        assert hub.requests == []
