"""The real `stages/generate.py` against the loopback OpenAI-compatible server.

The policy role runs on the `openai` backend (params `policy: {backend: openai,
model: honing-echo, ...}`), so a stage process can be killed half-way and rerun:
the request cache must make the rerun send only what was not answered, and the
artifact must come out as an uninterrupted run's. Failures the user can fix (a
wrong key, an unknown model, a server that is not there) must end the stage with
one line on stderr, exit 1 and nothing written.
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
import yaml
from conftest import copy_project, subprocess_env
from polars.testing import assert_frame_equal

from honing.artifacts.io import read_artifact, write_artifact
from honing.calls.cache import RequestCache
from honing.calls.server import ChatServer, echo_reply
from honing.method.prompts import PromptSet
from schemas.candidates import Candidates
from schemas.prompts import Prompts

KEY_ENV = "HONING_TEST_RESUME_KEY"
KEY = "sk-test-resume"
CONCURRENCY = 8
NUM_PROMPTS = 200
NUM_SAMPLES = 2
REQUESTS_PER_PROMPT = 2  # one greedy request, one sampled request with n = NUM_SAMPLES
CANDIDATES = Path("data/it1/generate/candidates.parquet")
METRICS = Path("metrics/it1/generate.json")
RUNTIME = Path("runtime/it1/generate.json")  # per-run figures: cache hits and misses


def prompt_pool(count: int) -> pl.DataFrame:
    texts = [f"Ann has {i} coins . Ann gets {i % 7 + 1} more . How many coins does Ann have ?"
             for i in range(count)]
    return pl.DataFrame({
        "id": [hashlib.sha256(t.encode()).hexdigest()[:16] for t in texts],
        "prompt": texts,
        "reference": [None] * count,
        "answer": [str(i + i % 7 + 1) for i in range(count)],
        "task": ["reference"] * count,
        "metadata": [None] * count,
        "source": ["test"] * count,
        "split": ["train"] * count,
    }, schema={"id": pl.String, "prompt": pl.String, "reference": pl.String, "answer": pl.String,
               "task": pl.String, "metadata": pl.String, "source": pl.String, "split": pl.String})


def make_stage_dir(root: Path, policy: dict, pool: pl.DataFrame) -> Path:
    """A copy of the project whose params put the policy on the openai backend and whose
    prompt pool is `pool` (the stage reads only data/prepare/train.parquet)."""
    copy_project(root)
    (root / METRICS).unlink(missing_ok=True)  # the default run's, committed: the stage has not run here
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["policy"] = policy
    params["generate"] = {"num_samples": NUM_SAMPLES, "temperature": 1.0, "greedy": True, "max_tokens": 32,
                          "num_prompts": 0}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    write_artifact(pool, root / "data/prepare/train.parquet", Prompts)
    return root


def openai_policy(url: str, model: str = "honing-echo", **options) -> dict:
    return {"backend": "openai", "model": model, "base_url": url, "api_key_env": KEY_ENV,
            "max_concurrency": CONCURRENCY, **options}


def generate_command() -> list[str]:
    return [sys.executable, "-m", "stages.generate", "it1"]


def run_generate(stage_dir: Path, key: str = KEY, timeout: float = 120) -> subprocess.CompletedProcess:
    env = subprocess_env(stage_dir.parent / f"{stage_dir.name}-cache", **{KEY_ENV: key})
    return subprocess.run(generate_command(), check=False, cwd=stage_dir, env=env, capture_output=True, text=True,
                          timeout=timeout)


def answered(log_path: Path) -> Counter:
    """How many times the server answered each request (ok outcomes in its JSONL log)."""
    counts: Counter = Counter()
    if log_path.exists():
        # The server may be appending as we read: only whole lines count.
        for line in log_path.read_text().split("\n")[:-1]:
            entry = json.loads(line)
            if entry["outcome"] == "ok":
                counts[entry["prompt"]] += 1
    return counts


class RecordingReply:
    """The server's echo reply, remembering every user message it answered."""

    def __init__(self):
        self.seen: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, messages: list[dict]) -> str:
        with self._lock:
            self.seen.append(messages[-1]["content"])
        return echo_reply(messages)


@pytest.fixture
def server(tmp_path):
    reply = RecordingReply()
    with ChatServer(reply=reply, api_key=KEY, latency_ms=20, log_path=tmp_path / "requests.jsonl") as chat:
        chat.recorded = reply
        yield chat


def test_sigkill_half_way_then_rerun_repeats_only_calls_in_flight_and_growth_sends_only_new(tmp_path, server):
    pool = prompt_pool(NUM_PROMPTS)
    total = NUM_PROMPTS * REQUESTS_PER_PROMPT
    policy = openai_policy(server.url)
    resumed = make_stage_dir(tmp_path / "resumed", policy, pool)
    cache_path = tmp_path / "resumed-cache" / "requests.sqlite"
    env = subprocess_env(cache_path.parent, **{KEY_ENV: KEY})

    stderr_path = tmp_path / "killed.stderr"
    with open(stderr_path, "w") as stderr:  # a file, not a pipe: progress bars could fill a pipe
        process = subprocess.Popen(generate_command(), cwd=resumed, env=env, stdout=subprocess.DEVNULL,
                                   stderr=stderr)
    deadline = time.monotonic() + 60
    while sum(answered(server.log_path).values()) < total * 45 // 100:  # about half-way
        if process.poll() is not None:
            pytest.fail(f"the stage ended (rc {process.returncode}) before it could be killed: "
                        f"{stderr_path.read_text()}")
        assert time.monotonic() < deadline, "the stage made no progress against the server"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    time.sleep(0.1)
    while server.inflight:  # replies already under way when the stage died
        time.sleep(0.005)
    answered_at_kill = sum(answered(server.log_path).values())
    cached_at_kill = RequestCache(cache_path).stats()["rows"]
    assert answered_at_kill < total, "the stage finished before the kill"
    assert not (resumed / CANDIDATES).exists() and not (resumed / METRICS).exists()
    # Every answer is cached as it arrives: at most the calls in flight were lost.
    assert answered_at_kill - CONCURRENCY <= cached_at_kill <= answered_at_kill

    done = run_generate(resumed)
    assert done.returncode == 0, done.stderr
    counts = answered(server.log_path)
    assert len(counts) == total
    assert sum(counts.values()) - answered_at_kill == total - cached_at_kill, "the rerun sent a cached request"
    repeated = [prompt for prompt, n in counts.items() if n > 1]
    assert len(repeated) == answered_at_kill - cached_at_kill <= CONCURRENCY
    assert max(counts.values()) <= 2
    metrics = json.loads((resumed / RUNTIME).read_text())["calls"]
    assert (metrics["cache_hits"], metrics["cache_misses"]) == (cached_at_kill, total - cached_at_kill)

    # An uninterrupted run in a separate folder with a fresh cache writes the same artifact.
    # (Same server: the backend's model_id, hence the `model` column, names its URL.)
    straight = make_stage_dir(tmp_path / "straight", policy, pool)
    done = run_generate(straight)
    assert done.returncode == 0, done.stderr
    frame = read_artifact(resumed / CANDIDATES, Candidates)
    assert frame.height == NUM_PROMPTS * (1 + NUM_SAMPLES)
    assert_frame_equal(frame, read_artifact(straight / CANDIDATES, Candidates))
    assert (resumed / CANDIDATES).read_bytes() == (straight / CANDIDATES).read_bytes()

    # Growing the pool by 1 % sends exactly the new prompts' requests, nothing else.
    grown = prompt_pool(NUM_PROMPTS + NUM_PROMPTS // 100)
    new_prompts = grown["prompt"].to_list()[NUM_PROMPTS:]
    write_artifact(grown, resumed / "data/prepare/train.parquet", Prompts)
    before_log, before_seen = answered(server.log_path), len(server.recorded.seen)
    done = run_generate(resumed)
    assert done.returncode == 0, done.stderr
    sent = answered(server.log_path) - before_log
    assert sum(sent.values()) == len(new_prompts) * REQUESTS_PER_PROMPT
    assert not set(sent) & set(before_log), "an old prompt was sent again"
    templates = PromptSet(resumed / "prompts/micro")
    assert Counter(server.recorded.seen[before_seen:]) == Counter(
        {templates.answer(p): REQUESTS_PER_PROMPT for p in new_prompts})
    metrics = json.loads((resumed / RUNTIME).read_text())["calls"]
    assert metrics["cache_misses"] == len(new_prompts) * REQUESTS_PER_PROMPT
    assert metrics["cache_hits"] == NUM_PROMPTS * REQUESTS_PER_PROMPT
    grown_frame = read_artifact(resumed / CANDIDATES, Candidates)
    assert grown_frame.height == len(grown) * (1 + NUM_SAMPLES)
    assert_frame_equal(grown_frame.filter(pl.col("prompt_id").is_in(pool["id"].to_list())), frame)


# ---- failures the user can fix: one line, exit 1, nothing written ---------------------


PROGRESS_LINE = re.compile(r"^[\w ]+: +\d+%\|.*\| \d+/\d+ \[")  # tqdm: "greedy answers:   0%|   | 0/20 ["


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_one_line_failure(stage_dir: Path, result: subprocess.CompletedProcess, *expected: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    # The one line is the last; before it only the call layer's progress bars may stand.
    assert lines and lines[-1].startswith("error: "), result.stderr
    others = [line for line in lines[:-1] if not PROGRESS_LINE.match(line)]
    assert not others, result.stderr
    for text in expected:
        assert text in lines[-1], lines[-1]
    assert KEY not in result.stderr and "wrong-key" not in result.stderr  # keys never shown
    assert not (stage_dir / "data/it1/generate").exists()
    assert not (stage_dir / METRICS).exists()
    assert not (stage_dir.parent / f"{stage_dir.name}-cache" / "requests.sqlite").exists()


def test_a_wrong_api_key_fails_in_one_line(tmp_path, server):
    stage_dir = make_stage_dir(tmp_path / "repo", openai_policy(server.url), prompt_pool(20))
    result = run_generate(stage_dir, key="wrong-key")
    assert_one_line_failure(stage_dir, result, "rejected the API key (401)", KEY_ENV, server.url)


def test_an_unknown_model_fails_in_one_line(tmp_path, server):
    stage_dir = make_stage_dir(tmp_path / "repo", openai_policy(server.url, model="no-such-model"),
                               prompt_pool(20))
    result = run_generate(stage_dir)
    assert_one_line_failure(stage_dir, result, "model 'no-such-model' not found", server.url)


def test_an_unreachable_server_fails_in_one_line(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    policy = openai_policy(url, max_retries=1, initial_backoff_s=0.01, timeout=5)
    stage_dir = make_stage_dir(tmp_path / "repo", policy, prompt_pool(20))
    result = run_generate(stage_dir)
    assert_one_line_failure(stage_dir, result, f"cannot reach the server at {url}")
