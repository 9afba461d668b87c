"""The OpenAI backend over real HTTP: the official client against the loopback server."""

from __future__ import annotations

import json
import socket
import time

import pytest

from honing.calls.backends import make_backend
from honing.calls.backends.base import BackendError, ChatRequest, SamplingParams
from honing.calls.backends.openai_backend import (
    OpenAIBackend,
    parse_reset,
    retry_after_s,
)
from honing.calls.cache import RequestCache
from honing.calls.runner import run_requests
from honing.calls.server import FAULT_KINDS, ChatServer

# What the backend calls each injected fault when it retries it.
RETRY_KIND_OF_FAULT = {"rate_limit": "rate_limit", "server_error": "server_error", "slow": "timeout",
                       "truncated": "truncated", "malformed": "malformed", "no_choices": "no_choices",
                       "drop": "connection"}


def ask(text: str, **params) -> ChatRequest:
    return ChatRequest(messages=({"role": "user", "content": text},), params=SamplingParams(**params))


def fast_backend(server: ChatServer, **options) -> OpenAIBackend:
    options = {"timeout": 1.0, "max_retries": 2, "initial_backoff_s": 0.01, "max_backoff_s": 0.05, **options}
    return OpenAIBackend(server.model, base_url=server.url, **options)


def test_ten_percent_of_every_fault_every_row_correct_retries_counted_by_kind(tmp_path):
    assert set(RETRY_KIND_OF_FAULT) == set(FAULT_KINDS)
    requests = [ask(f"question {i}") for i in range(240)]
    # 70 % of attempts fail: 40 retries make a lost row (0.7^41) vanishingly rare.
    with ChatServer(faults={kind: 0.1 for kind in FAULT_KINDS}, slow_s=2.0, retry_after_s=0.01) as server:
        backend = fast_backend(server, max_retries=40)
        results, stats = run_requests(backend, requests, cache=RequestCache(tmp_path / "c.sqlite"))
    assert [r.text for r in results] == [f"echo: question {i}" for i in range(240)]
    outcomes = server.outcomes()
    assert stats.cache_misses == 240
    for fault, kind in RETRY_KIND_OF_FAULT.items():
        assert outcomes[fault] > 0, f"no {fault} was injected: the test proves nothing"
        assert stats.retries[kind] > 0, f"{fault} was injected but no {kind} retry was counted"
    clean = outcomes["ok"] == 240 and stats.retries["timeout"] == outcomes["slow"]
    if clean:  # the usual case: each kind counted as exactly what the server injected
        assert stats.retries == {RETRY_KIND_OF_FAULT[f]: outcomes[f] for f in FAULT_KINDS}
    else:
        # An overloaded machine delays replies past the client's timeout (counted as
        # timeouts, whatever the server sent), so only bounds hold.
        for fault, kind in RETRY_KIND_OF_FAULT.items():
            if kind != "timeout":
                assert stats.retries[kind] <= outcomes[fault], kind
    metrics = stats.to_runtime()
    assert metrics["retries"] == sum(stats.retries.values()) == sum(backend.retry_counts.values())
    assert metrics["retries_no_choices"] == stats.retries["no_choices"] > 0


def test_sampling_fields_reach_the_server():
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:1/v1", foo=1)
    body = backend._body(ChatRequest(
        messages=({"role": "user", "content": "q"}, {"role": "assistant", "content": "A"}),
        params=SamplingParams(n=2, temperature=0.7, top_p=0.9, max_tokens=12, seed=5, stop=("\n",),
                              json_schema={"type": "object"}),
        continue_final_message=True))
    assert body == {
        "model": "m", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "A"}],
        "n": 2, "temperature": 0.7, "top_p": 0.9, "max_tokens": 12, "seed": 5, "stop": ["\n"],
        "response_format": {"type": "json_schema", "json_schema": {"name": "honing_reply",
                                                                   "schema": {"type": "object"}}},
        "foo": 1, "continue_final_message": True, "add_generation_prompt": False}
    # Extra body fields change answers, so they change the model id (and every cache key).
    assert backend.model_id.startswith("openai:http://127.0.0.1:1/v1:m:extra=")


def test_n_max_tokens_and_continuation_over_http():
    with ChatServer() as server:
        backend = fast_backend(server)
        plain, cut, continued = backend.generate([
            ask("a b c", n=3),
            ask("one two three four", max_tokens=2),
            ChatRequest(messages=({"role": "user", "content": "q"}, {"role": "assistant", "content": "Start"}),
                        continue_final_message=True),
        ])
    assert [c.text for c in plain.completions] == ["echo: a b c", "echo: a b c [sample 1]", "echo: a b c [sample 2]"]
    assert (cut.text, cut.completions[0].finish_reason) == ("echo: one", "length")
    assert continued.text == " (continuing 5 chars)"
    assert plain.prompt_tokens == 3 and plain.model == "honing-echo"


SCHEMA = {"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"]}


def test_json_schema_replies_are_validated_and_bad_ones_retried():
    attempts: dict[str, int] = {}

    def flaky_judge(messages):  # the first answer to each prompt is prose, then valid JSON
        prompt = messages[-1]["content"]
        attempts[prompt] = attempts.get(prompt, 0) + 1
        return "I think it is 7" if attempts[prompt] == 1 else json.dumps({"score": 7})

    with ChatServer(reply=flaky_judge) as server:
        backend = fast_backend(server)
        results = backend.generate([ask(f"rate {i}", json_schema=SCHEMA) for i in range(5)])
    assert [json.loads(r.text) for r in results] == [{"score": 7}] * 5
    assert backend.retry_counts["invalid_json"] == 5

    with ChatServer(reply=lambda m: json.dumps({"grade": 7})) as server:
        backend = fast_backend(server)
        with pytest.raises(BackendError) as caught:
            backend.generate([ask("rate", json_schema=SCHEMA)])
    assert str(caught.value) == (f"openai backend: {server.url} gave no valid reply after 3 attempts "
                                 "(last: invalid_json: reply JSON lacks required key(s) ['score'])")


def run_failing(backend: OpenAIBackend, tmp_path) -> tuple[str, float]:
    cache = RequestCache(tmp_path / "cache.sqlite")
    started = time.monotonic()
    with pytest.raises(BackendError) as caught:
        run_requests(backend, [ask(f"q{i}") for i in range(50)], cache=cache)
    elapsed = time.monotonic() - started
    assert not (tmp_path / "cache.sqlite").exists(), "a failed run must write nothing"
    message = str(caught.value)
    assert "\n" not in message
    return message, elapsed


def test_wrong_key_fails_at_once_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_KEY", "wrong-key-123")
    with ChatServer(api_key="right-key-456") as server:
        message, elapsed = run_failing(fast_backend(server, api_key_env="TEST_KEY", max_retries=6), tmp_path)
    assert message == (f"openai backend: the server at {server.url} rejected the API key (401): "
                       "set TEST_KEY to a valid key")
    assert elapsed < 2.0
    assert server.outcomes()["unauthorized"] <= 64  # only the first wave went out
    assert "wrong-key-123" not in message and "wrong-key" not in fast_backend(server).model_id


def test_wrong_model_fails_at_once_with_one_line(tmp_path):
    with ChatServer() as server:
        backend = OpenAIBackend("gpt-nope", base_url=server.url, max_retries=6)
        message, elapsed = run_failing(backend, tmp_path)
    assert message == (f"openai backend: model 'gpt-nope' not found at {server.url} (404): "
                       f"check `model:` in params.yaml against {server.url}/models")
    assert elapsed < 2.0


def test_unreachable_server_fails_after_its_retries_with_one_line(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = OpenAIBackend("m", base_url=f"http://127.0.0.1:{port}/v1", timeout=1.0, max_retries=2,
                            initial_backoff_s=0.01, max_backoff_s=0.05)
    message, elapsed = run_failing(backend, tmp_path)
    assert message.startswith(f"openai backend: cannot reach the server at http://127.0.0.1:{port}/v1 "
                              "after 3 attempts (")
    assert message.endswith("): is it running, and is base_url right?")
    assert elapsed < 2.0
    assert backend.retry_counts["connection"] >= 2


def test_bad_request_is_not_retried():
    with ChatServer() as server:
        backend = fast_backend(server, max_retries=6)
        with pytest.raises(BackendError, match=r"rejected the request \(400\): `messages` must be a non-empty"):
            backend.generate([ChatRequest(messages=())])
    assert sum(backend.retry_counts.values()) == 0


def test_missing_key_for_openai_itself_is_one_line(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(BackendError, match=r"^openai backend: no API key for https://api.openai.com/v1: "
                                           r"set OPENAI_API_KEY$"):
        OpenAIBackend("gpt-4o-mini").generate([ask("q")])


def test_client_side_request_rate_limit_holds():
    with ChatServer() as server:
        backend = fast_backend(server, requests_per_minute=3000)  # 50/s, bursts of 50
        started = time.monotonic()
        backend.generate([ask(f"q{i}") for i in range(100)])
        elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 4.0, elapsed


def test_server_rate_limit_headers_slow_the_client_down():
    headers = {"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "0",
               "x-ratelimit-reset-requests": "200ms"}
    with ChatServer(ratelimit_headers=headers) as server:
        backend = fast_backend(server, max_concurrency=1)
        started = time.monotonic()
        backend.generate([ask(f"q{i}") for i in range(5)])
        elapsed = time.monotonic() - started
    assert backend.limiter.requests.per_minute == 600
    assert elapsed >= 0.8, "each reply said 'none left for 200 ms'; the client must wait"


def test_header_parsers():
    assert parse_reset("6m0s") == 360 and parse_reset("20ms") == pytest.approx(0.02)
    assert parse_reset("1.5") == 1.5 and parse_reset("soon") is None
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_s({"retry-after": "3"}) == 3.0
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after_s({"retry-after": "3600"}) == 120.0  # capped
    assert retry_after_s({}) is None


def test_make_backend_builds_it_from_a_params_block():
    backend = make_backend({"backend": "openai", "model": "gpt-4o-mini", "base_url": "http://h:1/v1/",
                            "max_concurrency": 8, "price": {"input_per_mtok": 1}})
    assert isinstance(backend, OpenAIBackend)
    assert backend.model_id == "openai:http://h:1/v1:gpt-4o-mini" and backend.max_concurrency == 8
