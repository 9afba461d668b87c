"""The real-model preset (presets/smollm2-gym.yaml) at CI size: `dvc repro` end to end.

A temporary git + DVC repository holds the project; `honing preset` merges the
preset into params.yaml, then the CI sizes below are merged over it (a few dozen
reasoning-gym prompts, 2 answers per prompt, 2 LoRA steps per training, short
replies, 12 held-out items). The policy is SmolLM2-135M-Instruct (the GGUF package,
converted by the base stage) on transformers, or on vLLM in `.ci/vllm-tests`. The
strong critic is the referee served on a loopback port by the stage glue
(`critic.serve`), reached through the openai backend over HTTP; evaluation uses a
served referee too, so that the policy's rewrites run whatever its own critic says.

The tests then read what the run left: every stage ran, every artifact matches its
schema, the critic's and the policy's feedback parse rates are in the metrics and
in `honing results --detail`, evaluation refined by rewrite, and every LoRA-trained
checkpoint differs from the one it started from.

The stage tests at the end need no model run: one line and nothing written for an
unknown reasoning-gym task, a served critic whose replies never parse, a bad
`serve:` block and a port already taken.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml
from conftest import copy_project, subprocess_env
from test_pipeline import ARTIFACTS, dvc, git, lock_outs, merge, ran

from honing.artifacts.io import read_artifact
from honing.results import parse_rate
from schemas.registry import PreferencePairs, Quarantine

PRESET = "presets/smollm2-gym.yaml"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ci_params(port: int, backend: str) -> dict:
    """The preset at CI size: what is merged over it after `honing preset`."""
    url = f"http://127.0.0.1:{port}/v1"
    policy = {"backend": "transformers", "batch_size": 32} if backend == "transformers" else {
        "backend": "vllm", "dtype": "float32", "max_model_len": 1024, "enforce_eager": True}
    lora_steps = {"max_steps": 2, "per_device_train_batch_size": 4, "logging_steps": 1, "warmup_steps": 0}
    return {
        "policy": policy,
        "critic": {"base_url": url, "parse_probe": 8},
        "prepare": {"reasoning_gym": {"size": 48}, "split": {"meta": 0.25, "train": 0.25, "eval": 0.5}},
        "meta_corpus": {"num_samples": 1, "max_tokens": 24},
        "train_meta": {"sft": lora_steps},
        "generate": {"num_prompts": 8, "num_samples": 1, "max_tokens": 24},
        "critique": {"max_tokens": 32},
        "refine": {"max_tokens": 24, "critic": {"backend": "self", "max_tokens": 32}},
        "filter": {"require_correct": False},  # at this size few answers are right: train still gets records
        "train": {"sft": lora_steps},
        "evaluate": {"num_prompts": 12, "max_tokens": 24, "rounds": 1,
                     "critic": {"backend": "openai", "model": "referee", "base_url": url,
                                "serve": {"referee": "data/prepare/eval.parquet"}, "max_tokens": 96}},
    }


def preset_repo(root: Path, cache: Path, backend: str) -> tuple[Path, dict, dict]:
    """A git + DVC repo of the project with the preset applied by `honing preset`,
    then reduced to CI size, committed."""
    repo = copy_project(root)
    env = subprocess_env(cache)
    applied = subprocess.run([str(BIN / "honing"), "preset", PRESET], cwd=repo, env=env, capture_output=True,
                             text=True, timeout=120)
    assert applied.returncode == 0, applied.stderr
    params = merge(yaml.safe_load((repo / "params.yaml").read_text()), ci_params(free_port(), backend))
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(repo, "init", "-q", env=env)
    git(repo, "add", "-A", env=env)  # the scratch repo only: everything in it is ours
    git(repo, "commit", "-q", "-m", "the smollm2-gym preset at CI size", env=env)
    return repo, env, params


class Run:
    def __init__(self, repo: Path, env: dict, params: dict, result: subprocess.CompletedProcess, seconds: float):
        self.repo, self.env, self.params, self.result, self.seconds = repo, env, params, result, seconds

    def metrics(self, path: str) -> dict:
        return json.loads((self.repo / "metrics" / path).read_text())


def run_preset(tmp_path_factory, backend: str) -> Run:
    root = tmp_path_factory.mktemp(f"preset-{backend}")
    repo, env, params = preset_repo(root / "repo", root / "honing-cache", backend)
    started = time.monotonic()
    result = dvc(repo, "repro", env=env, timeout=1500)
    seconds = time.monotonic() - started
    (root / "repro.log").write_text(result.stdout + result.stderr)
    print(f"\ndvc repro of the smollm2-gym preset at CI size ({backend}): {seconds:.0f} s", file=sys.stderr)
    return Run(repo, env, params, result, seconds)


@pytest.fixture(scope="module")
def transformers_run(tmp_path_factory) -> Run:
    return run_preset(tmp_path_factory, "transformers")


@pytest.fixture(scope="module")
def vllm_run(tmp_path_factory) -> Run:
    pytest.importorskip("vllm")
    return run_preset(tmp_path_factory, "vllm")


# ---- what the run must show (each check runs on both backends) ---------------------------


def check_every_stage_ran_and_every_artifact_validates(run: Run) -> None:
    listed = dvc(run.repo, "stage", "list", "--name-only", env=run.env).stdout.split()
    assert sorted(ran(run.result)) == sorted(listed)
    its, cks = list(run.params["iterations"]), list(run.params["checkpoints"])
    expected = {}
    for pattern, schema in ARTIFACTS.items():
        names = ([pattern.format(it=it) for it in its] if "{it}" in pattern else
                 [pattern.format(ck=ck) for ck in cks] if "{ck}" in pattern else [pattern])
        expected.update({name: schema for name in names})
    found = sorted(str(p.relative_to(run.repo)) for p in (run.repo / "data").rglob("*.parquet"))
    assert set(found) <= set(expected), sorted(set(found) - set(expected))
    for name in found:
        schema, id_column = expected[name]
        frame = read_artifact(run.repo / name, schema, id_column=id_column)
        if schema not in (Quarantine, PreferencePairs):
            assert frame.height > 0, f"{name} is empty"
    core = [name for name in expected if "judgements" not in name]
    assert sorted(set(core) - set(found)) == []
    prompts = pl.read_parquet(run.repo / "data/prepare/eval.parquet")
    assert prompts["task"].str.starts_with("reasoning_gym:").all()


def check_the_critic_was_served_and_parse_rates_are_in_metrics(run: Run) -> None:
    meta = run.metrics("meta_corpus.json")
    port = run.params["critic"]["base_url"].split(":")[2].split("/")[0]
    assert meta["critic"] == f"openai:http://127.0.0.1:{port}/v1:referee"
    assert meta["critic_calls"]["requests"] == meta["rows"] + meta["quarantined_unparseable_feedback"] + \
        meta.get("dropped_no_refinement", 0)
    assert meta["quarantined_unparseable_feedback"] == 0 and parse_rate("meta_corpus", meta) == 1.0
    corpus = pl.read_parquet(run.repo / "data/meta_corpus/corpus.parquet")
    assert set(corpus["verdict"]) <= {"correct", "incorrect"} and corpus["score"].is_between(1, 10).all()
    wrong = corpus.filter(pl.col("verdict") == "incorrect")
    assert wrong["refinement"].str.contains(r"\nAnswer: -?\d+$").all()  # the referee's refinement
    for it in run.params["iterations"]:
        critique = run.metrics(f"{it}/critique.json")
        assert sum(critique["verdicts"].values()) == critique["rows"] > 0
        assert 0.0 <= parse_rate(f"critique@{it}", critique) <= 1.0  # the policy's own SRT feedback
    shown = subprocess.run([str(BIN / "honing"), "results", "--detail"], cwd=run.repo, env=run.env,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "The strong critic's feedback parsed: 1.00 (meta corpus)" in shown.stdout
    for stage in ("meta_corpus", "train_meta", "critique@it1", "train@it2", "evaluate@it2"):
        assert f"| {stage} | " in shown.stdout, shown.stdout


def check_evaluation_rewrote_flagged_answers(run: Run) -> None:
    for ck in run.params["checkpoints"]:
        m = run.metrics(f"evaluate/{ck}.json")
        rows = pl.read_parquet(run.repo / f"data/{ck}/evaluate/rows.parquet")
        first = rows.filter(pl.col("round") == 0)
        flagged = int((first["verdict"] == "incorrect").sum())
        assert flagged == int((~first["correct"]).sum()) > 0  # the referee flags exactly the wrong answers
        # the policy answered every prompt, then rewrote each flagged answer once (rewrite mode)
        assert m["calls"]["requests"] == m["prompts"] + flagged, m
        assert m["critic_calls"]["requests"] == m["prompts"] + flagged
        assert m["accuracy_per_round"][0] == m["accuracy_direct"] and len(m["accuracy_per_round"]) == 2


def check_lora_checkpoints_differ_from_where_they_started(run: Run) -> None:
    outs = lock_outs(run.repo)
    md5 = {path: digest for paths in outs.values() for path, digest in paths.items()}
    checkpoints = list(run.params["checkpoints"].values())
    assert len({md5[path] for path in checkpoints}) == len(checkpoints), md5
    base = json.loads((run.repo / "data/base/model/config.json").read_text())
    for path in checkpoints[1:]:
        folder = run.repo / path
        assert not (folder / "adapter_config.json").exists()  # LoRA merged into full weights
        config = json.loads((folder / "config.json").read_text())
        assert (config["hidden_size"], config["num_hidden_layers"]) == (base["hidden_size"], base["num_hidden_layers"])
    for name in ("train_meta.json", "it1/train.json", "it2/train.json"):
        m = run.metrics(name)
        assert m["sft_steps"] == 2, (name, m)
    assert run.metrics("it1/train.json")["config"]["lora"]["r"] == 16


CHECKS = [check_every_stage_ran_and_every_artifact_validates,
          check_the_critic_was_served_and_parse_rates_are_in_metrics,
          check_evaluation_rewrote_flagged_answers,
          check_lora_checkpoints_differ_from_where_they_started]


@pytest.mark.slow
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__[len("check_"):])
def test_the_preset_on_transformers(transformers_run, check):
    check(transformers_run)


@pytest.mark.vllm
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__[len("check_"):])
def test_the_preset_on_vllm(vllm_run, check):
    check(vllm_run)


# ---- bad inputs through the stages: one line, nothing written ----------------------------


def stage(root: Path, *args: str, cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=root, env=subprocess_env(cache),
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def preset_project(tmp_path) -> Path:
    root = copy_project(tmp_path / "repo")
    applied = subprocess.run([str(BIN / "honing"), "preset", PRESET], cwd=root, capture_output=True, text=True,
                             env=subprocess_env(tmp_path / "cache"), timeout=120)
    assert applied.returncode == 0, applied.stderr
    return root


def set_params(root: Path, **blocks) -> dict:
    params = merge(yaml.safe_load((root / "params.yaml").read_text()), blocks)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def test_an_unknown_gym_task_stops_prepare_in_one_line(preset_project, tmp_path):
    root = preset_project
    params = yaml.safe_load((root / "params.yaml").read_text())
    tasks = params["prepare"]["reasoning_gym"]["tasks"]
    tasks["chain_summ"] = tasks.pop("chain_sum")  # a typo in the task's name
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    done = stage(root, "stages.prepare", cache=tmp_path / "cache")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown reasoning_gym task 'chain_summ' (near names: chain_sum" in lines[0], lines
    assert not (root / "data/prepare").exists()


def gym_pool(size: int, task: str = "chain_sum"):
    from honing.artifacts.prepare import PrepareConfig, prepare
    from schemas.prompts import Prompts

    block = {"size": size, "tasks": {task: {"max_terms": 2, "max_digits": 1}}}
    return prepare(PrepareConfig(source=f"reasoning_gym:{task}", split={"meta": 1.0}, reasoning_gym=block),
                   Prompts).meta


def meta_corpus_project(root: Path, pool, server_url: str, **critic) -> None:
    """meta_corpus's inputs: the pool as meta.parquet, the policy on a scripted server."""
    from honing.artifacts.io import write_artifact
    from schemas.prompts import Prompts

    write_artifact(pool, root / "data/prepare/meta.parquet", Prompts)
    (root / "data/base/model").mkdir(parents=True)  # unused: the policy is served
    set_params(root, policy={"backend": "openai", "model": "honing-echo", "base_url": server_url,
                             "max_retries": 0}, critic=critic)


def test_a_served_critic_whose_replies_never_parse_stops_meta_corpus(preset_project, tmp_path):
    """The referee pointed at another pool knows none of the questions: every reply
    says so and none parses, so the stage stops after the probe with the rate."""
    from honing.calls.server import ChatServer

    root = preset_project
    other = tmp_path / "other.parquet"
    gym_pool(12, "basic_arithmetic").write_parquet(other)
    port = free_port()
    with ChatServer(reply=lambda messages: "I add the numbers.\nAnswer: 3") as policy:
        meta_corpus_project(root, gym_pool(12), policy.url, base_url=f"http://127.0.0.1:{port}/v1",
                            serve={"referee": str(other)}, parse_probe=6)
        committed = (root / "metrics/meta_corpus.json").read_bytes()  # the default run's
        done = stage(root, "stages.meta_corpus", cache=tmp_path / "cache")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: critic openai:http://127.0.0.1:{port}/v1:referee: 0 of its first 6 "
                               "replies parsed (0%), below critic.min_parse_rate 0.5; stopped before the rest. "
                               "First unparsed: none of the fields"), lines[0]
    assert "the question is not in" in lines[0]
    assert not (root / "data/meta_corpus").exists()
    assert (root / "metrics/meta_corpus.json").read_bytes() == committed


@pytest.mark.parametrize("critic, message", [
    ({"serve": {"referee": ""}}, "error: params.yaml `critic.serve`: expected {referee: <prompts .parquet>}, "
                                 "found {'referee': ''}"),
    ({"serve": {"referee": "data/prepare/nope.parquet"}},
     "error: params.yaml `critic.serve`: the referee's prompts data/prepare/nope.parquet do not exist"),
    ({"serve": {"referee": "data/prepare/meta.parquet"}, "base_url": "https://api.openai.com/v1"},
     "error: params.yaml `critic.serve`: a served critic needs backend openai and base_url "
     "http://127.0.0.1:<port>/v1; found backend 'openai', base_url 'https://api.openai.com/v1'"),
    ("taken", "error: params.yaml `critic.serve`: cannot serve the referee on port {port} (Address already in use); "
              "stop what holds it or pick another port in base_url"),
])
def test_a_bad_serve_block_stops_meta_corpus_in_one_line(preset_project, tmp_path, critic, message):
    from honing.calls.server import ChatServer

    root = preset_project
    with ChatServer(reply=lambda messages: "Answer: 3") as policy, socket.socket() as holder:
        if critic == "taken":
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
            critic, message = {"base_url": f"http://127.0.0.1:{port}/v1"}, message.format(port=port)
        meta_corpus_project(root, gym_pool(6), policy.url, **critic)
        done = stage(root, "stages.meta_corpus", cache=tmp_path / "cache")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [message]
    assert not (root / "data/meta_corpus").exists()
