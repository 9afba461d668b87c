"""Several served replicas behind one openai backend (`honing.calls.backends.replicas`).

Loopback servers stand in for `vllm serve` replicas. One is killed half-way through a
batch: every row must still be answered, in request order, each answer cached once
whichever replica gave it, and each replica's share, errors and in-flight peak must
reach the runtime figures (never the metrics). Then the real generate stage does the
same in a project copy whose policy lists both servers.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from test_resume_stage import (
    CANDIDATES,
    KEY,
    METRICS,
    NUM_SAMPLES,
    RUNTIME,
    make_stage_dir,
    openai_policy,
    prompt_pool,
    run_generate,
)

from honing.calls.backends import make_backend
from honing.calls.backends.base import BackendError, ChatRequest, SamplingParams
from honing.calls.backends.openai_backend import OpenAIBackend
from honing.calls.backends.replicas import ReplicatedOpenAIBackend
from honing.calls.cache import RequestCache
from honing.calls.roles import Role
from honing.calls.runner import run_requests
from honing.calls.server import ChatServer, echo_reply

SLOTS = 4


def ask(text: str, **params) -> ChatRequest:
    return ChatRequest(messages=({"role": "user", "content": text},), params=SamplingParams(**params))


def replicated(urls: list[str], **options) -> OpenAIBackend:
    options = {"max_concurrency": SLOTS, "timeout": 2.0, "max_retries": 6, "initial_backoff_s": 0.01,
               "max_backoff_s": 0.05, **options}
    return OpenAIBackend("honing-echo", base_url=urls, **options)


def dead_url() -> str:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


class DiesAfter:
    """The echo reply, until the `after`-th answer: then the server dies like a killed
    process. `ChatServer.stop()` alone refuses new connections but keeps serving the
    client's open keep-alive ones, so every later attempt on those is dropped, and a
    reply still being computed fails (500)."""

    def __init__(self, after: int):
        self.after, self.answered, self.dead = after, 0, threading.Event()
        self.server: ChatServer | None = None
        self._lock = threading.Lock()

    def __call__(self, messages: list[dict]) -> str:
        with self._lock:
            if self.dead.is_set():
                raise RuntimeError("the replica was killed")
            self.answered += 1
            if self.answered == self.after:
                self.dead.set()
                self.server.set_faults(drop=1.0)
                threading.Thread(target=self.server.stop, daemon=True).start()
        return echo_reply(messages)


def dying_server(after: int, **options) -> ChatServer:
    reply = DiesAfter(after)
    server = ChatServer(reply=reply, **options)
    reply.server, server.dies = server, reply
    return server


# ---- backend level -----------------------------------------------------------------------


def test_a_replica_killed_half_way_loses_nothing_and_its_share_is_in_the_runtime_figures(tmp_path):
    total = 240
    requests = [ask(f"question {i}") for i in range(total)]
    cache = RequestCache(tmp_path / "cache.sqlite")
    with dying_server(after=60, latency_ms=5) as doomed, ChatServer(latency_ms=5) as healthy:
        backend = replicated([doomed.url, healthy.url], timeout=10.0)
        results, stats = run_requests(backend, requests, cache=cache)
    assert doomed.dies.dead.is_set(), "the replica was never killed: the test proves nothing"
    # Every row answered, in request order, and each answer cached once.
    assert [r.text for r in results] == [f"echo: question {i}" for i in range(total)]
    assert cache.stats()["rows"] == total == stats.cache_misses
    runtime = stats.to_runtime()
    shares = runtime["replicas"]
    assert set(shares) == {doomed.url, healthy.url}
    assert shares[doomed.url]["answered"] == 60  # the killed one: what it answered before it died
    assert shares[healthy.url]["answered"] == total - 60
    assert shares[doomed.url]["errors"] > 0 and shares[doomed.url]["set_aside"] == 1
    assert shares[healthy.url]["errors"] == 0 and shares[healthy.url]["set_aside"] == 0
    assert 1 <= shares[doomed.url]["in_flight_peak"] <= SLOTS and shares[healthy.url]["in_flight_peak"] == SLOTS
    errors = {k: v for k, v in shares[doomed.url].items() if k.startswith("errors_")}
    assert set(errors) <= {"errors_connection", "errors_server_error"} and sum(errors.values()) == \
        shares[doomed.url]["errors"] == runtime["retries"]
    assert "replicas" not in stats.to_metrics()

    # The cache key does not say which replica answered: a rerun on another replica set
    # (here one fresh server) sends nothing, and gives the same rows in the same order.
    with ChatServer() as other:
        again, rerun = run_requests(replicated([other.url]), requests, cache=cache)
        assert other.log == []
    assert [r.text for r in again] == [r.text for r in results] and all(r.cached for r in again)
    assert (rerun.cache_hits, rerun.cache_misses) == (total, 0)
    assert rerun.replicas == {} and "replicas" not in rerun.to_runtime()  # nothing was sent
    assert replicated([other.url]).model_id == backend.model_id == "openai:replicas:honing-echo"


def test_requests_go_where_slots_are_free_so_the_fast_replica_answers_more():
    with ChatServer(latency_ms=100) as slow, ChatServer(latency_ms=5) as fast:
        backend = replicated([slow.url, fast.url])
        results = backend.generate([ask(f"q{i}") for i in range(200)])
        shares = backend.replica_figures()
    assert [r.text for r in results] == [f"echo: q{i}" for i in range(200)]
    assert shares[slow.url]["answered"] + shares[fast.url]["answered"] == 200
    assert shares[slow.url]["answered"] >= SLOTS  # it was used, up to its own limit ...
    assert shares[fast.url]["answered"] > 3 * shares[slow.url]["answered"]  # ... but the fast one did the most
    assert slow.max_inflight <= SLOTS and fast.max_inflight <= SLOTS  # each replica's own in-flight limit
    assert shares[slow.url]["in_flight_peak"] == shares[fast.url]["in_flight_peak"] == SLOTS


def test_endpoints_give_each_replica_its_own_slots():
    with ChatServer(latency_ms=20) as small, ChatServer(latency_ms=20) as large:
        backend = make_backend({"backend": "openai", "model": "honing-echo", "max_concurrency": 2,
                                "endpoints": [small.url, {"base_url": large.url + "/", "max_concurrency": 6}]})
        assert isinstance(backend, ReplicatedOpenAIBackend) and backend.max_concurrency == 8
        backend.generate([ask(f"q{i}") for i in range(160)])
        shares = backend.replica_figures()
    assert small.max_inflight <= 2 and large.max_inflight <= 6
    assert (shares[small.url]["in_flight_peak"], shares[large.url]["in_flight_peak"]) == (2, 6)
    assert shares[large.url]["answered"] > 2 * shares[small.url]["answered"]


def test_a_replica_set_aside_is_tried_again_after_its_cool_down():
    with ChatServer() as flaky, ChatServer() as steady:
        backend = replicated([flaky.url, steady.url], replica_cooldown_s=0.3)
        flaky.set_faults(server_error=1.0)  # every attempt a 500
        backend.generate([ask(f"a{i}") for i in range(40)])
        first = backend.replica_figures()
        assert first[flaky.url]["answered"] == 0 and first[flaky.url]["set_aside"] == 1
        assert first[flaky.url]["errors_server_error"] >= 3 and first[steady.url]["answered"] == 40
        flaky.set_faults()  # healthy again
        time.sleep(0.35)
        backend.generate([ask(f"b{i}") for i in range(40)])
        second = backend.replica_figures()
    assert second[flaky.url]["answered"] > 0 and second[flaky.url]["errors"] == 0
    assert second[flaky.url]["answered"] + second[steady.url]["answered"] == 40


def test_no_replica_left_fails_at_once_in_one_line(tmp_path):
    urls = [dead_url(), dead_url()]
    backend = replicated(urls, replica_max_failures=2)
    started = time.monotonic()
    with pytest.raises(BackendError) as caught:
        run_requests(backend, [ask(f"q{i}") for i in range(50)], cache=RequestCache(tmp_path / "c.sqlite"))
    message = str(caught.value)
    assert time.monotonic() - started < 3.0
    assert "\n" not in message
    assert message.startswith("openai backend: no replica left, all 2 set aside after 2 failures in a row: ")
    assert all(f"{url} (connection: " in message for url in urls)
    assert message.endswith(": are they running, and are the URLs right?")
    assert not (tmp_path / "c.sqlite").exists(), "a failed run must write nothing"


def test_errors_no_retry_can_fix_and_spent_retries_name_the_replica_in_one_line():
    with ChatServer() as good, ChatServer(model="other-model") as wrong:
        backend = replicated([good.url, wrong.url])
        with pytest.raises(BackendError) as caught:
            backend.generate([ask(f"q{i}") for i in range(20)])
    assert str(caught.value) == (f"openai backend: model 'honing-echo' not found at {wrong.url} (404): "
                                 f"check `model:` in params.yaml against {wrong.url}/models")

    schema = {"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"]}
    with ChatServer(reply=lambda m: "prose") as a, ChatServer(reply=lambda m: "prose") as b:
        backend = replicated([a.url, b.url], max_retries=2)
        with pytest.raises(BackendError) as caught:
            backend.generate([ask("rate", json_schema=schema)])
    message = str(caught.value)
    assert message.startswith("openai backend: no valid reply from 2 replicas after 3 attempts (last from http://")
    assert message.endswith("invalid_json: reply is not the JSON the schema asks for: 'prose')")


def test_a_single_base_url_string_is_the_plain_backend_unchanged():
    single = make_backend({"backend": "openai", "model": "m", "base_url": "http://h:1/v1/", "max_concurrency": 8})
    assert type(single) is OpenAIBackend and not hasattr(single, "replica_figures")
    assert single.model_id == "openai:http://h:1/v1:m" and single.max_concurrency == 8
    with ChatServer() as server:
        results, stats = run_requests(OpenAIBackend(server.model, base_url=server.url), [ask("q")], cache=None)
    assert results[0].text == "echo: q" and "replicas" not in stats.to_runtime()
    with pytest.raises(BackendError, match=r"^openai backend: replica_cooldown_s set, but base_url is one URL"):
        OpenAIBackend("m", base_url="http://h:1/v1", replica_cooldown_s=5)


def test_bad_replica_lists_are_one_line_errors():
    cases = [
        ({"base_url": []}, "base_url must be a non-empty list of base URLs, found []"),
        ({"endpoints": [{"url": "http://a/v1"}]}, "endpoints[0]: expected a URL or {base_url, max_concurrency}"),
        ({"endpoints": ["http://a/v1", {"base_url": "http://b/v1", "max_concurrency": 0}]},
         "endpoints[1]: max_concurrency must be an integer >= 1, found 0"),
        ({"base_url": ["http://a/v1", "http://a/v1/"]}, "base_url[1]: http://a/v1 is listed twice"),
        ({"base_url": ["http://a/v1"], "endpoints": ["http://b/v1"]}, "give base_url or endpoints, not both"),
        ({"base_url": ["http://a/v1"], "replica_max_failures": 0}, "replica_max_failures must be an integer >= 1"),
    ]
    for options, expected in cases:
        with pytest.raises(BackendError) as caught:
            make_backend({"backend": "openai", "model": "m", **options})
        assert expected in str(caught.value), (options, str(caught.value))
    # A password in a replica's URL stays out of figures and messages.
    backend = make_backend({"backend": "openai", "model": "m", "base_url": ["http://u:secret@h:1/v1", "http://[::1]:2/v1"]})
    assert list(backend.replica_figures()) == ["http://u@h:1/v1", "http://[::1]:2/v1"]


def test_a_role_adds_up_its_calls_per_replica_and_keeps_the_peak():
    with ChatServer() as a, ChatServer() as b:
        role = Role.from_params("policy", {"backend": "openai", "model": "honing-echo",
                                           "base_url": [a.url, b.url], "max_concurrency": 2, "cache": False})
        role.call([ask(f"x{i}") for i in range(10)])
        role.call([ask(f"y{i}") for i in range(6)])
    runtime = role.runtime()["replicas"]
    assert runtime[a.url]["answered"] + runtime[b.url]["answered"] == 16
    assert max(runtime[a.url]["in_flight_peak"], runtime[b.url]["in_flight_peak"]) == 2
    assert "replicas" not in role.metrics()


# ---- the real generate stage -----------------------------------------------------------------


def test_generate_stage_with_a_replica_killed_half_way(tmp_path):
    prompts = 100
    total = prompts * 2  # one greedy request and one sampled request per prompt
    pool = prompt_pool(prompts)
    with dying_server(after=total // 4, api_key=KEY, latency_ms=10) as doomed, \
            ChatServer(api_key=KEY, latency_ms=10) as healthy:
        policy = openai_policy([doomed.url, healthy.url], timeout=5, initial_backoff_s=0.01)
        stage_dir = make_stage_dir(tmp_path / "replicas", policy, pool)
        done = run_generate(stage_dir)
        assert done.returncode == 0, done.stderr
        assert doomed.dies.dead.is_set(), "the replica was never killed: the test proves nothing"

        runtime = json.loads((stage_dir / RUNTIME).read_text())["calls"]
        shares = runtime["replicas"]
        assert runtime["cache_misses"] == total
        assert shares[doomed.url]["answered"] == total // 4
        assert shares[healthy.url]["answered"] == total - total // 4
        assert shares[doomed.url]["errors"] > 0 and shares[doomed.url]["set_aside"] >= 1
        assert shares[healthy.url]["errors"] == 0
        metrics = json.loads((stage_dir / METRICS).read_text())
        assert "replicas" not in json.dumps(metrics) and metrics["candidates"] == prompts * (1 + NUM_SAMPLES)

        # Equal data, equal metrics and bytes: one replica alone (another replica set)
        # writes the same artifact and metrics file.
        alone = make_stage_dir(tmp_path / "alone", openai_policy([healthy.url]), pool)
        done = run_generate(alone)
        assert done.returncode == 0, done.stderr
    assert (alone / CANDIDATES).read_bytes() == (stage_dir / CANDIDATES).read_bytes()
    assert (alone / METRICS).read_bytes() == (stage_dir / METRICS).read_bytes()
