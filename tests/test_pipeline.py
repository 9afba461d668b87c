"""The real DAG: `dvc repro` in a temporary git + DVC repository.

A module fixture copies the tracked project files into a temp dir, merges
tests/pipeline_params.yaml (small sizes) over params.yaml, commits, and runs
`dvc repro` once (a few minutes on 2 CPU cores). The tests then read what that run
left: every stage ran, every artifact matches its schema, metrics and plots exist;
a second repro runs nothing; a change to one iteration's params reruns exactly that
iteration's downstream stages; `dvc exp run -S` works; a second clean run in
another directory gives the same output hashes. Tests that change the workspace put
it back to the committed baseline when they finish.

The corrupt-input tests need only a prepared prompt pool: they run the `prepare`
stage in a scratch copy and do not wait for the DAG.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml
from conftest import copy_project, subprocess_env

from honing.artifacts.io import read_artifact
from schemas.registry import (
    Candidates,
    EvaluationRows,
    Feedback,
    Filtered,
    MetaCorpus,
    PreferencePairs,
    Prompts,
    Quarantine,
    Refinements,
    SFTRecords,
)

pytestmark = pytest.mark.slow

REDUCED_PARAMS = Path(__file__).with_name("pipeline_params.yaml")
BIN = Path(sys.executable).parent
RUNNING = re.compile(r"^Running stage '([^']+)':", re.MULTILINE)

# Every parquet artifact the DAG writes -> (schema, id column); {it} is an iteration,
# {ck} a checkpoint. A parquet file not matched here fails the schema test: a new
# artifact needs its schema named here.
ARTIFACTS = {
    "data/prepare/meta.parquet": (Prompts, "id"),
    "data/prepare/train.parquet": (Prompts, "id"),
    "data/prepare/eval.parquet": (Prompts, "id"),
    "data/prepare/quarantine.parquet": (Quarantine, "row_id"),
    "data/meta_corpus/corpus.parquet": (MetaCorpus, "id"),
    "data/meta_corpus/quarantine.parquet": (Quarantine, "row_id"),
    "data/train_meta/sft.parquet": (SFTRecords, "id"),
    "data/{it}/generate/candidates.parquet": (Candidates, "id"),
    "data/{it}/critique/feedback.parquet": (Feedback, "id"),
    "data/{it}/refine/refinements.parquet": (Refinements, "id"),
    "data/{it}/filter/filtered.parquet": (Filtered, "id"),
    "data/{it}/build_sft/sft.parquet": (SFTRecords, "id"),
    "data/{it}/build_pairs/pairs.parquet": (PreferencePairs, "id"),
    "data/{ck}/evaluate/rows.parquet": (EvaluationRows, "id"),
}
ITERATION_STAGES = ["generate", "critique", "refine", "filter", "build_sft", "build_pairs", "train"]
MODEL_FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]


# ---- helpers ---------------------------------------------------------------------------


def merge(base: dict, override: dict) -> dict:
    """`override` merged into `base` key by key (nested dicts merged, the rest replaced)."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def write_reduced_params(repo: Path) -> dict:
    params = merge(yaml.safe_load((repo / "params.yaml").read_text()),
                   yaml.safe_load(REDUCED_PARAMS.read_text()))
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def run(repo: Path, *command: str, env: dict, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess:
    result = subprocess.run(list(command), check=False, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        pytest.fail(f"`{' '.join(command)}` exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}"
                    f"\n--- stderr\n{result.stderr[-4000:]}")
    return result


def dvc(repo: Path, *args: str, env: dict, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess:
    return run(repo, str(BIN / "dvc"), *args, env=env, check=check, timeout=timeout)


def git(repo: Path, *args: str, env: dict) -> subprocess.CompletedProcess:
    return run(repo, "git", "-c", "user.name=honing tests", "-c", "user.email=tests@honing.invalid",
               "-c", "commit.gpgsign=false", *args, env=env)


def ran(result: subprocess.CompletedProcess) -> list[str]:
    """The stages a `dvc repro` / `dvc exp run` ran, in order."""
    return RUNNING.findall(result.stdout)


def new_repo(root: Path, cache_dir: Path) -> tuple[Path, dict, dict]:
    """A git + DVC repository holding the project with reduced params, committed."""
    repo = copy_project(root)
    env = subprocess_env(cache_dir)
    params = write_reduced_params(repo)
    git(repo, "init", "-q", env=env)
    git(repo, "add", "-A", env=env)  # the scratch repo only: everything in it is ours
    git(repo, "commit", "-q", "-m", "project with reduced params", env=env)
    return repo, env, params


def expected_stages(params: dict) -> list[str]:
    """Every stage name dvc.yaml defines, with foreach families expanded."""
    its, cks = list(params["iterations"]), list(params["checkpoints"])
    return (["prepare", "base", "meta_corpus", "train_meta"]
            + [f"{s}@{it}" for it in its for s in ITERATION_STAGES]
            + [f"evaluate@{ck}" for ck in cks] + ["report"])


def lock_outs(repo: Path) -> dict[str, dict[str, str]]:
    """stage -> {out path: md5} from dvc.lock."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {stage: {o["path"]: o["md5"] for o in entry.get("outs", [])} for stage, entry in lock["stages"].items()}


# ---- the baseline run ------------------------------------------------------------------


class Pipeline:
    def __init__(self, repo: Path, env: dict, params: dict, first: subprocess.CompletedProcess):
        self.repo, self.env, self.params, self.first = repo, env, params, first
        self.lock = lock_outs(repo)

    def restore(self) -> None:
        """Back to the committed baseline: params, dvc.lock, metrics and plots from git,
        data from the DVC cache."""
        git(self.repo, "checkout", "-q", "--", ".", env=self.env)
        dvc(self.repo, "checkout", "--force", "-q", env=self.env)
        assert ran(dvc(self.repo, "repro", env=self.env)) == [], "restoring the baseline left stages to run"
        assert lock_outs(self.repo) == self.lock


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Pipeline:
    root = tmp_path_factory.mktemp("pipeline")
    repo, env, params = new_repo(root / "repo", root / "honing-cache")
    started = time.monotonic()
    first = dvc(repo, "repro", env=env)
    (root / "repro.log").write_text(first.stdout + first.stderr)
    print(f"\ndvc repro of the reduced DAG: {time.monotonic() - started:.0f} s", file=sys.stderr)
    git(repo, "add", "-A", env=env)
    git(repo, "commit", "-q", "-m", "baseline run", env=env)
    return Pipeline(repo, env, params, first)


def test_every_stage_ran_and_every_artifact_matches_its_schema(pipeline):
    repo, params = pipeline.repo, pipeline.params
    stages = expected_stages(params)
    listed = dvc(repo, "stage", "list", "--name-only", env=pipeline.env).stdout.split()
    assert sorted(listed) == sorted(stages)
    assert sorted(ran(pipeline.first)) == sorted(stages)

    # Every output dvc.lock records exists.
    outs = lock_outs(repo)
    assert sorted(outs) == sorted(stages)
    for stage, paths in outs.items():
        for path in paths:
            assert (repo / path).exists(), f"{stage}: output {path} missing"

    # Every parquet file under data/ is a known artifact and validates.
    its, cks = list(params["iterations"]), list(params["checkpoints"])
    expected = {}
    for pattern, schema in ARTIFACTS.items():
        names = [pattern.format(it=it) for it in its] if "{it}" in pattern else (
            [pattern.format(ck=ck) for ck in cks] if "{ck}" in pattern else [pattern])
        expected.update({name: schema for name in names})
    found = sorted(str(p.relative_to(repo)) for p in (repo / "data").rglob("*.parquet"))
    assert found == sorted(expected)
    for name, (schema, id_column) in expected.items():
        frame = read_artifact(repo / name, schema, id_column=id_column)
        # Quarantines are empty when nothing was bad; with an undertrained policy no
        # answer may be right, so no chosen/rejected pair (train.method is sft here).
        if schema not in (Quarantine, PreferencePairs):
            assert frame.height > 0, f"{name} is empty"

    # The pipeline's shape in numbers: sizes follow the reduced params.
    gen = params["generate"]
    for it in its:
        candidates = pl.read_parquet(repo / f"data/{it}/generate/candidates.parquet")
        assert candidates["prompt_id"].n_unique() == gen["num_prompts"]
        assert candidates.height == gen["num_prompts"] * (gen["num_samples"] + int(gen["greedy"]))
        assert set(candidates["iteration"]) == {it}
    for path in [*params["checkpoints"].values()]:
        for name in MODEL_FILES:
            assert (repo / path / name).is_file(), f"{path}/{name} missing"
    # Every training stage changed its checkpoint (a zero learning rate would not).
    hashes = {path: md5 for paths in outs.values() for path, md5 in paths.items()}
    checkpoints = list(params["checkpoints"].values())
    assert len({hashes[path] for path in checkpoints}) == len(checkpoints), hashes


def test_metrics_and_plots(pipeline):
    repo, params = pipeline.repo, pipeline.params
    rounds = params["evaluate"]["rounds"]
    for ck in params["checkpoints"]:
        m = json.loads((repo / f"metrics/evaluate/{ck}.json").read_text())
        assert 0.0 <= m["accuracy_direct"] <= 1.0 and 0.0 <= m["accuracy_refined"] <= 1.0
        assert len(m["accuracy_per_round"]) == rounds + 1
        assert m["accuracy_per_round"][0] == m["accuracy_direct"]
        assert m["accuracy_per_round"][-1] == m["accuracy_refined"]
    report = json.loads((repo / "metrics/report.json").read_text())
    assert report["checkpoints"] == list(params["checkpoints"])
    assert set(report["accuracy_direct"]) == set(report["accuracy_refined"]) == set(params["checkpoints"])
    for key in ("final_gain_over_base", "final_refinement_gain"):
        assert isinstance(report[key], (int, float))
    for it in params["iterations"]:
        for stage in ITERATION_STAGES:
            assert (repo / f"metrics/{it}/{stage}.json").is_file()

    with open(repo / "plots/accuracy.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["checkpoint"] for r in rows] == list(params["checkpoints"])
    for r in rows:
        m = json.loads((repo / f"metrics/evaluate/{r['checkpoint']}.json").read_text())
        assert float(r["direct"]) == pytest.approx(m["accuracy_direct"])
        assert float(r["refined"]) == pytest.approx(m["accuracy_refined"])
    with open(repo / "plots/rounds.csv") as f:
        assert len(list(csv.DictReader(f))) == len(params["checkpoints"]) * (rounds + 1)

    shown = dvc(repo, "metrics", "show", env=pipeline.env).stdout
    assert "metrics/report.json" in shown and "metrics/evaluate/it2.json" in shown
    dvc(repo, "plots", "show", "-o", str(repo.parent / "dvc_plots"), env=pipeline.env)
    html = (repo.parent / "dvc_plots" / "index.html").read_text()
    assert "plots/accuracy.csv" in html or "accuracy_per_checkpoint" in html


def test_a_second_repro_runs_nothing(pipeline):
    again = dvc(pipeline.repo, "repro", env=pipeline.env)
    assert ran(again) == [], again.stdout
    status = dvc(pipeline.repo, "status", "--json", env=pipeline.env)
    assert json.loads(status.stdout) == {}


# One override per iteration stage, under `iterations.it2`: each must rerun that
# stage of it2 first, then nothing but what follows it.
OVERRIDES = {
    "generate": {"seed": 7},
    "critique": {"max_tokens": 63},
    "refine": {"rounds": 2},
    "filter": {"dedupe": False},
    "build_sft": {"feedback_records": False},
    "build_pairs": {"min_margin": 0.5},
    "train": {"sft": {"learning_rate": 0.002}},  # one key of a nested block: merged deeply
}
REPRO_OVERRIDES = ["generate", "refine", "filter", "train"]  # the others: `dvc status` only


def downstream(stage: str) -> set[str]:
    """Every stage that may rerun after `stage@it2` changes its output."""
    after = ITERATION_STAGES[ITERATION_STAGES.index(stage) + 1:]
    return {f"{s}@it2" for s in after} | {"evaluate@it2", "report"}


def override(repo: Path, stage: str, block: dict) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["iterations"]["it2"][stage] = block
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.parametrize("stage", list(OVERRIDES))
def test_an_iteration_override_makes_exactly_that_stage_stale(pipeline, stage):
    repo, env = pipeline.repo, pipeline.env
    try:
        override(repo, stage, OVERRIDES[stage])
        status = json.loads(dvc(repo, "status", "--json", env=env).stdout)
        assert set(status) == {f"{stage}@it2"}, status
    finally:
        pipeline.restore()


@pytest.mark.parametrize("stage", REPRO_OVERRIDES)
def test_an_iteration_override_reruns_that_stage_then_only_what_follows(pipeline, stage):
    repo, env = pipeline.repo, pipeline.env
    try:
        override(repo, stage, OVERRIDES[stage])
        reran = ran(dvc(repo, "repro", env=env))
        assert reran[0] == f"{stage}@it2", reran
        assert set(reran[1:]) <= downstream(stage), reran
        if stage == "train":  # the merged block: the override's rate, every other key from `train.sft`
            sft = json.loads((repo / "metrics/it2/train.json").read_text())["config"]["sft"]
            assert sft == {**pipeline.params["train"]["sft"], "learning_rate": 0.002}
        if stage == "generate":  # a new seed changes the samples: the whole iteration follows
            assert set(reran) == {f"{s}@it2" for s in ITERATION_STAGES} | {"evaluate@it2"} | (
                {"report"} & set(reran))
        assert ran(dvc(repo, "repro", env=env)) == []
    finally:
        pipeline.restore()


def test_an_experiment_with_a_changed_knob_runs_and_is_listed(pipeline):
    repo, env = pipeline.repo, pipeline.env
    try:
        result = dvc(repo, "exp", "run", "-n", "two-rounds", "-S", "refine.rounds=2", env=env)
        reran = ran(result)
        assert "refine@it1" in reran and "refine@it2" in reran and "prepare" not in reran
        shown = json.loads(dvc(repo, "exp", "show", "--json", env=env).stdout)
        experiments = [exp for commit in shown for exp in (commit.get("experiments") or [])]
        names = {exp.get("name") for exp in experiments}
        assert "two-rounds" in names, shown
        (exp,) = [e for e in experiments if e.get("name") == "two-rounds"]
        revs = exp["revs"][0]["data"]
        assert revs["params"]["params.yaml"]["data"]["refine"]["rounds"] == 2
        assert "metrics/report.json" in revs["metrics"]
        refine_metrics = json.loads((repo / "metrics/it1/refine.json").read_text())
        assert refine_metrics["rounds"] == 2
    finally:
        pipeline.restore()


def test_a_second_clean_run_gives_the_same_output_hashes(pipeline, tmp_path):
    # The whole DAG again (about as long as the first run) in another directory, with a
    # fresh request cache and a fresh DVC cache: every model call is made again.
    repo, env, _ = new_repo(tmp_path / "twin", tmp_path / "twin-cache")
    assert env["HONING_CACHE_DIR"] != pipeline.env["HONING_CACHE_DIR"]
    dvc(repo, "repro", env=env)
    first, second = pipeline.lock, lock_outs(repo)
    assert sorted(first) == sorted(second)
    # Every output, metrics and plots files included (wall-clock figures go to timings/,
    # outside DVC's hashes): same seed, same bytes.
    differ = [f"{stage}: {path}" for stage in first for path, md5 in first[stage].items()
              if second[stage].get(path) != md5]
    assert not differ, "outputs differ between two clean runs:\n" + "\n".join(differ)


# ---- corrupt input: one clear message, exit 1, nothing written --------------------------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> pl.DataFrame:
    """A valid prompt pool from the real `prepare` stage (reduced params)."""
    root = tmp_path_factory.mktemp("prepared")
    repo = copy_project(root / "repo")
    write_reduced_params(repo)
    run(repo, sys.executable, "-m", "stages.prepare", env=subprocess_env(root / "cache"))
    return pl.read_parquet(repo / "data/prepare/train.parquet")


def corrupt(frame: pl.DataFrame, how: str) -> tuple[pl.DataFrame, str | None, str, str]:
    """(corrupted frame, the row id the message must name or None, the column, the problem)."""
    ids = frame["id"].to_list()
    if how == "missing column":
        return frame.drop("prompt"), None, "prompt", "missing column"
    if how == "empty prompt":
        prompts = frame["prompt"].to_list()
        prompts[3] = "   "
        return frame.with_columns(prompt=pl.Series(prompts)), ids[3], "prompt", "empty prompt"
    if how == "wrong type":  # a list where text belongs: no value converts
        return frame.with_columns(prompt=pl.col("prompt").str.split(" ")), ids[0], "prompt", "wrong type"
    if how == "duplicate id":
        ids[5] = ids[2]
        return frame.with_columns(id=pl.Series(ids)), ids[2], "id", "duplicate id"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["missing column", "empty prompt", "wrong type", "duplicate id"])
def test_corrupt_prompt_pool_stops_generate_with_one_clear_message(prepared, tmp_path, how):
    frame = prepared
    repo = copy_project(tmp_path / "repo")
    write_reduced_params(repo)
    bad, row_id, column, problem = corrupt(frame, how)
    target = repo / "data/prepare/train.parquet"
    target.parent.mkdir(parents=True)
    bad.write_parquet(target)
    metrics = repo / "metrics/it1/generate.json"  # the default run's, committed
    committed = metrics.read_bytes() if metrics.exists() else None

    result = run(repo, sys.executable, "-m", "stages.generate", "it1", env=subprocess_env(tmp_path / "cache"),
                 check=False, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    # One message: a head line naming the file, then one line for the one problem.
    assert lines[0] == "error: data/prepare/train.parquet: 1 problem against schema Prompts", result.stderr
    assert len(lines) == 2, result.stderr
    detail = lines[1]
    assert detail.startswith("data/prepare/train.parquet: ")
    assert f"column {column!r}" in detail and problem in detail, detail
    if row_id is not None:
        assert f"row id {row_id!r}" in detail, detail
    assert not (repo / "data/it1/generate").exists()
    assert (metrics.read_bytes() if metrics.exists() else None) == committed
