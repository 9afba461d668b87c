"""A real OpenAI-compatible HTTP server on 127.0.0.1, for tests, benchmarks and local use.

It answers `POST /v1/chat/completions` and `GET /v1/models` from either a honing
`Backend` (a local checkpoint) or scripted replies (a function messages -> text, or
a deterministic echo). Faults can be injected at per-kind rates so the client's
retries meet the failures a real provider produces:

    rate_limit    429 with Retry-After
    server_error  500
    slow          a valid reply sent only after `slow_s` (longer than the client timeout)
    truncated     200 whose body stops half-way, then the connection closes
    malformed     200 whose body is not JSON (an HTML error page from a proxy)
    no_choices    200 with valid JSON and an empty `choices` list
    drop          the connection closes before any response

Whether an attempt meets a fault is a hash of (seed, request, attempt number), so the
same run injects the same faults, and every reply is a function of its request.
Every attempt is logged as {"t", "prompt", "outcome"}; `log_path` appends the same
records as JSON lines, which another process (a test) can read.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import Counter
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import Any, Callable, Mapping, Sequence

FAULT_KINDS = ("rate_limit", "server_error", "slow", "truncated", "malformed", "no_choices", "drop")

ReplyFunction = Callable[[list[dict]], str]


def prompt_hash(body: Mapping[str, Any]) -> str:
    """The identity of a chat request as the server sees it (messages and sampling fields)."""
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def echo_reply(messages: list[dict]) -> str:
    """The default scripted reply: the last message's content, prefixed."""
    return f"echo: {messages[-1].get('content', '') if messages else ''}"


def _count_tokens(text: str) -> int:
    # Whitespace words stand in for tokens: deterministic and good enough for usage/cost.
    return len(text.split())


def _json_for_schema(schema: Mapping[str, Any], seed_text: str) -> Any:
    """A small value that satisfies `schema` (echo mode under response_format json_schema)."""
    kind = schema.get("type", "object")
    if kind == "object":
        props = schema.get("properties", {})
        return {k: _json_for_schema(v, seed_text) for k, v in props.items()}
    return {"string": seed_text, "integer": len(seed_text) % 10, "number": 0.5,
            "boolean": True, "array": [], "null": None}.get(kind, seed_text)


class _BackendBatcher:
    """Feeds a honing Backend from many HTTP threads: requests arriving within a few
    milliseconds are answered by one `generate` call (a local model batches well and
    is not thread-safe)."""

    def __init__(self, backend: Any, max_batch: int = 64, max_wait_s: float = 0.005):
        self.backend, self.max_batch, self.max_wait_s = backend, max_batch, max_wait_s
        self._queue: SimpleQueue = SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="honing-server-batcher", daemon=True)
        self._thread.start()

    def submit(self, request: Any) -> Any:
        future: Future = Future()
        self._queue.put((request, future))
        return future.result()

    def _loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except Empty:
                    break
            try:
                results = self.backend.generate([r for r, _ in batch])
                for (_, future), result in zip(batch, results):
                    future.set_result(result)
            except Exception as err:  # every waiter gets the failure as a 500
                for _, future in batch:
                    future.set_exception(err)


class ChatServer:
    """An OpenAI-compatible server in a background thread. Use as a context manager or
    `start()`/`stop()`; `url` is the base URL to give a client (ends in /v1)."""

    def __init__(
        self,
        *,
        reply: ReplyFunction | None = None,
        backend: Any = None,
        model: str = "honing-echo",
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        latency_ms: float = 0.0,
        faults: Mapping[str, float] | None = None,
        retry_after_s: float = 0.05,
        slow_s: float = 2.0,
        ratelimit_headers: Mapping[str, str] | None = None,
        log_path: str | Path | None = None,
        seed: int = 0,
    ):
        if reply is not None and backend is not None:
            raise ValueError("ChatServer: give `reply` or `backend`, not both")
        self.model, self.host, self.port, self.api_key = model, host, port, api_key
        self.latency_ms, self.retry_after_s, self.slow_s, self.seed = latency_ms, retry_after_s, slow_s, seed
        self.ratelimit_headers = dict(ratelimit_headers or {})
        self.reply = reply or echo_reply
        self._batcher = _BackendBatcher(backend) if backend is not None else None
        self.faults: dict[str, float] = {}
        self.set_faults(**(faults or {}))
        self.log_path = Path(log_path) if log_path else None
        self._log: list[dict] = []
        self._attempts: Counter = Counter()
        self._lock = threading.Lock()
        self._inflight = 0
        self.max_inflight = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------
    def start(self) -> "ChatServer":
        handler = type("Handler", (_Handler,), {"chat": self})
        httpd = ThreadingHTTPServer((self.host, self.port), handler, bind_and_activate=False)
        # The stdlib default backlog (5) drops connects when 64 clients open at once.
        httpd.request_queue_size = 1024
        httpd.daemon_threads = True
        httpd.handle_error = _quiet_on_disconnect(httpd.handle_error)
        httpd.allow_reuse_address = True
        httpd.server_bind()
        httpd.server_activate()
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="honing-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "ChatServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def inflight(self) -> int:
        """Requests being answered right now."""
        with self._lock:
            return self._inflight

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # ---- faults and log --------------------------------------------------------------
    def set_faults(self, **rates: float) -> None:
        """Replace the fault rates, e.g. set_faults(rate_limit=0.1, drop=0.1); none = healthy."""
        unknown = sorted(set(rates) - set(FAULT_KINDS))
        if unknown:
            raise ValueError(f"unknown fault kind(s) {unknown}; expected some of {list(FAULT_KINDS)}")
        if sum(rates.values()) > 1.0:
            raise ValueError(f"fault rates add up to {sum(rates.values()):.2f}; at most 1.0")
        self.faults = {k: float(v) for k, v in rates.items() if v}

    @property
    def log(self) -> list[dict]:
        with self._lock:
            return list(self._log)

    def outcomes(self) -> Counter:
        return Counter(entry["outcome"] for entry in self.log)

    def _record(self, prompt: str, outcome: str) -> None:
        entry = {"t": time.time(), "prompt": prompt, "outcome": outcome}
        with self._lock:
            self._log.append(entry)
            if self.log_path is not None:
                with open(self.log_path, "a") as f:
                    f.write(json.dumps(entry) + "\n")

    def _draw_fault(self, prompt: str) -> str | None:
        with self._lock:
            attempt = self._attempts[prompt]
            self._attempts[prompt] += 1
        if not self.faults:
            return None
        digest = hashlib.sha256(f"{self.seed}:{prompt}:{attempt}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        for kind in FAULT_KINDS:
            u -= self.faults.get(kind, 0.0)
            if u < 0:
                return kind
        return None

    # ---- answering -------------------------------------------------------------------
    def completion(self, body: Mapping[str, Any]) -> dict:
        """The reply body for a chat request (no faults): same request, same reply."""
        messages = list(body.get("messages") or [])
        n = int(body.get("n") or 1)
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        continue_final = bool(body.get("continue_final_message"))
        schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema")
        if self._batcher is not None:
            texts, finish, prompt_tokens, completion_tokens = self._from_backend(
                body, messages, n, continue_final, schema)
        else:
            text = self.reply(messages)
            if continue_final and self.reply is echo_reply:
                text = f" (continuing {len(messages[-1].get('content', ''))} chars)"
            if schema is not None and self.reply is echo_reply:
                text = json.dumps(_json_for_schema(schema, text))
            texts = [text if i == 0 else f"{text} [sample {i}]" for i in range(n)]
            finish = ["stop"] * n
            if max_tokens is not None and schema is None:
                for i, t in enumerate(texts):
                    words = t.split(" ")
                    if len(words) > max_tokens:
                        texts[i], finish[i] = " ".join(words[:max_tokens]), "length"
            prompt_tokens = sum(_count_tokens(str(m.get("content", ""))) for m in messages)
            completion_tokens = sum(_count_tokens(t) for t in texts)
        return {
            "id": "chatcmpl-" + prompt_hash(body),
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", self.model),
            "choices": [
                {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": f,
                 "logprobs": None}
                for i, (t, f) in enumerate(zip(texts, finish))
            ],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    def _from_backend(self, body, messages, n, continue_final, schema):
        from honing.calls.backends.base import ChatRequest, SamplingParams

        stop = body.get("stop") or ()
        params = SamplingParams(
            n=n, temperature=float(body.get("temperature", 0.0) or 0.0),
            top_p=float(body.get("top_p", 1.0) or 1.0),
            max_tokens=int(body.get("max_completion_tokens") or body.get("max_tokens") or 256),
            seed=body.get("seed"), stop=(stop,) if isinstance(stop, str) else tuple(stop),
            json_schema=schema)
        request = ChatRequest(messages=tuple(messages), params=params, continue_final_message=continue_final)
        result = self._batcher.submit(request)
        return ([c.text for c in result.completions], [c.finish_reason for c in result.completions],
                result.prompt_tokens, result.completion_tokens)


def _quiet_on_disconnect(handle_error: Callable) -> Callable:
    """Clients that vanish (killed, timed out) are normal here; other errors still print."""
    import sys

    def handle(request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        handle_error(request, client_address)

    return handle


def _error_body(message: str, kind: str, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class _Handler(BaseHTTPRequestHandler):
    chat: ChatServer  # set on the per-server subclass
    protocol_version = "HTTP/1.1"  # keep-alive: a client's pool reuses connections
    # Headers and body go out as separate writes; with Nagle on, the body waits for the
    # client's delayed ACK (~40 ms a reply), which caps throughput far below the latency.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # the request log replaces stderr noise
        pass

    def _send_json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in {**self.chat.ratelimit_headers, **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._send_json(200, {"object": "list", "data": [
                {"id": self.chat.model, "object": "model", "created": 0, "owned_by": "honing"}]})
        else:
            self._send_json(404, _error_body(f"no route GET {self.path}", "invalid_request_error"))

    def do_POST(self) -> None:
        chat = self.chat
        with chat._lock:
            chat._inflight += 1
            chat.max_inflight = max(chat.max_inflight, chat._inflight)
        try:
            self._chat_completions()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): fine
            self.close_connection = True
        finally:
            with chat._lock:
                chat._inflight -= 1

    def _chat_completions(self) -> None:
        chat = self.chat
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send_json(404, _error_body(f"no route POST {self.path}", "invalid_request_error"))
            return
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            self._send_json(400, _error_body("request body is not JSON", "invalid_request_error"))
            return
        prompt = prompt_hash(body)
        if chat.api_key is not None and self.headers.get("Authorization") != f"Bearer {chat.api_key}":
            chat._record(prompt, "unauthorized")
            self._send_json(401, _error_body("Incorrect API key provided.", "invalid_request_error",
                                             "invalid_api_key"))
            return
        if body.get("model") != chat.model:
            chat._record(prompt, "unknown_model")
            self._send_json(404, _error_body(f"The model `{body.get('model')}` does not exist.",
                                             "invalid_request_error", "model_not_found"))
            return
        if not body.get("messages"):
            chat._record(prompt, "bad_request")
            self._send_json(400, _error_body("`messages` must be a non-empty list", "invalid_request_error"))
            return

        fault = chat._draw_fault(prompt)
        if chat.latency_ms:
            time.sleep(chat.latency_ms / 1000)  # one thread per connection: others keep going
        chat._record(prompt, fault or "ok")
        if fault == "drop":
            self.close_connection = True
            self.connection.shutdown(2)  # no status line at all
            return
        if fault == "rate_limit":
            after = chat.retry_after_s
            self._send_json(429, _error_body("Rate limit reached; retry later.", "requests", "rate_limit_exceeded"),
                            {"Retry-After": str(math.ceil(after)), "retry-after-ms": str(int(after * 1000))})
            return
        if fault == "server_error":
            self._send_json(500, _error_body("The server had an error processing your request.", "server_error"))
            return
        if fault == "no_choices":
            reply = chat.completion(body)
            reply["choices"] = []
            self._send_json(200, reply)
            return
        if fault == "malformed":
            self._send_raw(b"<html><body>502 Bad Gateway</body></html>", "application/json")
            return
        try:
            reply = chat.completion(body)
        except Exception as err:  # a backend failure is the server's fault: 500 with the reason
            self._send_json(500, _error_body(f"backend failed: {err}", "server_error"))
            return
        if fault == "slow":
            time.sleep(chat.slow_s)
        if fault == "truncated":
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self._send_json(200, reply)

    def _send_raw(self, data: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serve_forever(server: ChatServer) -> None:
    """Run until SIGINT or SIGTERM (the `honing serve` command)."""
    import signal

    stopped = threading.Event()
    if threading.current_thread() is threading.main_thread():
        # Installed explicitly: a process started in the background by a shell inherits
        # SIGINT as ignored, and SIGTERM's default would skip the clean shutdown.
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, lambda *_: stopped.set())
    server.start()
    print(f"honing serve: {server.url} model={server.model}", flush=True)
    try:
        while not stopped.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


__all__: Sequence[str] = ("ChatServer", "FAULT_KINDS", "echo_reply", "prompt_hash", "serve_forever")
