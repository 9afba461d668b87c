"""Growing or reordering a prompt pool costs only its new prompts (issue 12).

The real `prepare` and `generate it1` stages run in a copy of the project, with the
default `prepare:` and `generate:` blocks (the claim is about the defaults), a JSONL
pool as the source and the policy on the loopback OpenAI-compatible server. The
split is decided per prompt from its content hash, so 1 % more prompts must cost
about 1 % more model calls, and a shuffled pool must give byte-identical artifacts
and send nothing.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import copy_project, subprocess_env

from honing.calls.server import ChatServer

KEY_ENV = "HONING_TEST_GROWTH_KEY"
KEY = "sk-test-growth"
POOL = 1000
GROWTH = POOL // 100  # 1 %
RUNTIME = Path("runtime/it1/generate.json")


def records(start: int, stop: int) -> list[dict]:
    return [{"prompt": f"Tom has {i} apples . He buys {i % 9 + 1} more . How many apples does Tom have ?",
             "answer": i + i % 9 + 1} for i in range(start, stop)]


def write_pool(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def server():
    with ChatServer(api_key=KEY) as chat:
        yield chat


@pytest.fixture
def project(tmp_path, server) -> Path:
    """A project copy whose policy is the loopback server and whose pool is pool.jsonl;
    every other param is the project's default."""
    root = copy_project(tmp_path / "repo")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["policy"] = {"backend": "openai", "model": "honing-echo", "base_url": server.url,
                        "api_key_env": KEY_ENV, "max_concurrency": 16}
    params["prepare"]["source"] = "pool.jsonl"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def stage(root: Path, *args: str) -> None:
    env = subprocess_env(root.parent / "cache", **{KEY_ENV: KEY})
    done = subprocess.run([sys.executable, "-m", *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr


def prepare_and_generate(root: Path, server: ChatServer) -> int:
    """Run both stages; the requests the server answered (generate's cache misses)."""
    before = server.outcomes()["ok"]
    stage(root, "stages.prepare")
    stage(root, "stages.generate", "it1")
    sent = server.outcomes()["ok"] - before
    assert json.loads((root / RUNTIME).read_text())["calls"]["cache_misses"] == sent
    return sent


def split_ids(root: Path) -> dict[str, set[str]]:
    import polars as pl

    return {s: set(pl.read_parquet(root / f"data/prepare/{s}.parquet")["id"]) for s in ("meta", "train", "eval")}


def digests(root: Path) -> dict[str, str]:
    """md5 of every artifact under data/prepare, and of the stage's metrics."""
    paths = [*sorted((root / "data/prepare").iterdir()), root / "metrics/prepare.json"]
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in paths}


def test_a_grown_pool_costs_its_new_prompts_and_a_shuffled_one_nothing(project, server):
    pool = records(0, POOL)
    write_pool(project / "pool.jsonl", pool)
    first = prepare_and_generate(project, server)
    assert first > POOL // 2  # a greedy and a sampled request for each of about 500 train prompts
    splits = split_ids(project)

    grown = pool + records(POOL, POOL + GROWTH)
    write_pool(project / "pool.jsonl", grown)
    added = prepare_and_generate(project, server)
    assert added <= 0.015 * first, f"{added} new calls for {GROWTH} new prompts (first run: {first})"
    after = split_ids(project)
    assert all(splits[s] <= after[s] for s in splits), "a prompt moved between splits"
    assert sum(map(len, after.values())) == POOL + GROWTH

    before = digests(project)
    assert len(before) == 5  # meta, train, eval, quarantine, metrics
    shuffled = grown[:]
    random.Random(0).shuffle(shuffled)
    write_pool(project / "pool.jsonl", shuffled)
    assert prepare_and_generate(project, server) == 0
    assert digests(project) == before
