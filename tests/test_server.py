"""The loopback OpenAI-compatible server: replies, faults, latency, checks and its log."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import openai
import pytest

from honing.calls.backends.base import ChatResult, Completion
from honing.calls.server import FAULT_KINDS, ChatServer, prompt_hash


def post(server: ChatServer, body: dict, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """One raw HTTP exchange: (status, headers, body bytes as received)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    data = json.dumps(body).encode()
    conn.request("POST", "/v1/chat/completions", body=data,
                 headers={"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    try:
        payload = response.read()
    except http.client.IncompleteRead as err:
        payload = err.partial
    conn.close()
    return response.status, dict(response.getheaders()), payload


BODY = {"model": "honing-echo", "messages": [{"role": "user", "content": "two plus two"}]}


def test_the_openai_client_gets_echo_replies_and_the_model_list():
    with ChatServer() as server:
        client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)
        reply = client.chat.completions.create(model="honing-echo", n=2,
                                               messages=[{"role": "user", "content": "two plus two"}])
        assert [c.message.content for c in reply.choices] == ["echo: two plus two", "echo: two plus two [sample 1]"]
        assert reply.usage.prompt_tokens == 3 and reply.usage.completion_tokens == 4 + 6
        assert [m.id for m in client.models.list()] == ["honing-echo"]


def test_same_request_same_reply_and_max_tokens_cuts_with_length():
    with ChatServer() as server:
        first, second = post(server, BODY)[2], post(server, BODY)[2]
        assert first == second
        _, _, cut = post(server, {**BODY, "max_tokens": 2})
        choice = json.loads(cut)["choices"][0]
        assert (choice["message"]["content"], choice["finish_reason"]) == ("echo: two", "length")


def test_scripted_replies_and_json_schema_and_continuation():
    with ChatServer(reply=lambda messages: messages[-1]["content"].upper()) as server:
        assert json.loads(post(server, BODY)[2])["choices"][0]["message"]["content"] == "TWO PLUS TWO"
    schema = {"type": "object", "properties": {"score": {"type": "integer"}, "why": {"type": "string"}},
              "required": ["score", "why"]}
    with ChatServer() as server:
        body = {**BODY, "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}}
        content = json.loads(post(server, body)[2])["choices"][0]["message"]["content"]
        assert set(json.loads(content)) == {"score", "why"}
        body = {**BODY, "messages": [*BODY["messages"], {"role": "assistant", "content": "The answer"}],
                "continue_final_message": True, "add_generation_prompt": False}
        assert json.loads(post(server, body)[2])["choices"][0]["message"]["content"] == " (continuing 10 chars)"


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_each_fault_looks_like_the_real_failure(kind):
    with ChatServer(faults={kind: 1.0}, slow_s=0.3, retry_after_s=1.5) as server:
        if kind == "drop":
            with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
                post(server, BODY)
            assert server.outcomes() == {"drop": 1}
            return
        started = time.monotonic()
        status, headers, payload = post(server, BODY)
        elapsed = time.monotonic() - started
    if kind == "rate_limit":
        assert status == 429 and headers["Retry-After"] == "2" and headers["retry-after-ms"] == "1500"
    elif kind == "server_error":
        assert status == 500 and "error" in json.loads(payload)
    elif kind == "slow":
        assert status == 200 and elapsed >= 0.3 and json.loads(payload)["choices"]
    elif kind == "truncated":
        assert status == 200 and 0 < len(payload) < int(headers["Content-Length"])
        with pytest.raises(json.JSONDecodeError):
            json.loads(payload)
    elif kind == "malformed":
        assert status == 200 and payload.startswith(b"<html>")
    elif kind == "no_choices":
        assert status == 200 and json.loads(payload)["choices"] == []
    assert server.outcomes() == {kind: 1}


def test_fault_rates_are_deterministic_and_close_to_asked():
    draws = []
    for _ in range(2):
        server = ChatServer(faults={"server_error": 0.1, "rate_limit": 0.2}, seed=3)
        draws.append([server._draw_fault(f"p{i}") for i in range(2000)])
    assert draws[0] == draws[1]
    assert 150 <= draws[0].count("server_error") <= 250 and 320 <= draws[0].count("rate_limit") <= 480
    with pytest.raises(ValueError, match="unknown fault kind"):
        ChatServer(faults={"meteor": 0.1})
    with pytest.raises(ValueError, match="add up to 1.20"):
        ChatServer(faults={"drop": 0.6, "slow": 0.6})


def test_api_key_check_unknown_model_and_log_file(tmp_path):
    log_path = tmp_path / "log.jsonl"
    with ChatServer(api_key="s3cret", log_path=log_path) as server:
        status, _, payload = post(server, BODY, {"Authorization": "Bearer wrong"})
        assert status == 401 and json.loads(payload)["error"]["code"] == "invalid_api_key"
        status, _, payload = post(server, {**BODY, "model": "gpt-9"}, {"Authorization": "Bearer s3cret"})
        assert status == 404 and "gpt-9" in json.loads(payload)["error"]["message"]
        assert post(server, BODY, {"Authorization": "Bearer s3cret"})[0] == 200
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [line["outcome"] for line in lines] == ["unauthorized", "unknown_model", "ok"]
    assert lines[2]["prompt"] == prompt_hash(BODY) and lines == server.log
    assert "s3cret" not in log_path.read_text()


def test_latency_does_not_serialise_requests():
    with ChatServer(latency_ms=300) as server:
        threads = [threading.Thread(target=post, args=(server, {**BODY, "seed": i})) for i in range(40)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
    assert server.outcomes() == {"ok": 40}
    assert elapsed < 3.0, f"40 requests of 300 ms each took {elapsed:.2f} s (12 s one by one)"
    assert server.max_inflight >= 30


class ScriptedBackend:
    """A honing Backend that answers with the prompt reversed and records its batches."""

    kind, model_id = "scripted", "scripted:reverse"

    def __init__(self):
        self.batches: list[int] = []

    def generate(self, requests, on_result=None):
        self.batches.append(len(requests))
        time.sleep(0.05)  # a model's forward pass: requests arriving meanwhile form the next batch
        return [ChatResult(completions=(Completion(r.messages[-1]["content"][::-1], "stop"),) * r.params.n,
                           prompt_tokens=1, completion_tokens=1, model=self.model_id) for r in requests]

    def close(self):
        pass


def test_a_backend_behind_the_server_is_fed_in_batches():
    backend = ScriptedBackend()
    with ChatServer(backend=backend, model="reverse") as server:
        replies: dict[int, str] = {}

        def ask(i: int) -> None:
            body = {"model": "reverse", "messages": [{"role": "user", "content": f"abc{i}"}]}
            replies[i] = json.loads(post(server, body)[2])["choices"][0]["message"]["content"]

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert replies == {i: f"abc{i}"[::-1] for i in range(30)}
    assert sum(backend.batches) == 30 and max(backend.batches) > 1


def test_stop_frees_the_port():
    server = ChatServer().start()
    port = server.port
    server.stop()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow
def test_a_local_checkpoint_served_over_http_answers_like_the_backend_itself(tmp_path):
    transformers_backend = pytest.importorskip("honing.calls.backends.transformers_backend")
    from honing.calls.backends.base import ChatRequest, SamplingParams
    from honing.calls.backends.openai_backend import OpenAIBackend
    from honing.micro.tinymodel import save_untrained

    local = transformers_backend.TransformersBackend(str(save_untrained(tmp_path / "tiny")))
    requests = [ChatRequest(messages=({"role": "user", "content": f"Problem {i} plus 3"},),
                            params=SamplingParams(max_tokens=6)) for i in range(6)]
    with ChatServer(backend=local, model="tiny") as server:
        # One request at a time, so each is a batch of one on both paths (padding can
        # change a float's last bit, and with it a greedy token).
        client = OpenAIBackend("tiny", base_url=server.url, max_concurrency=1, timeout=30)
        over_http = client.generate(requests)
    direct = [local.generate([r])[0] for r in requests]
    assert [r.text for r in over_http] == [r.text for r in direct]
    assert [r.completion_tokens for r in over_http] == [r.completion_tokens for r in direct]
    assert all(r.text and r.model == "tiny" for r in over_http)
