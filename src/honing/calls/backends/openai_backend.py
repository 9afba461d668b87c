"""The OpenAI-compatible backend: OpenAI itself, vLLM's server, or any /v1/chat/completions.

It drives the official `openai.AsyncOpenAI` client from the sync `generate` with a
pool of `max_concurrency` workers, a request- and token-rate limiter that follows the
server's `x-ratelimit-*` headers, and its own retry loop (the client's is off) so
retries are counted by kind for the stage's metrics. Every reply is validated: a 200
with a cut-off or non-JSON body, no choices, or JSON that misses the requested
schema is retried like a 429 or a 500. Errors no retry can fix (bad key, unknown
model, bad request) stop the batch at once with one line for the user.

The API key is read from the environment when a batch starts and handed to the
client only: it never enters `model_id`, cache keys, logs or error messages.

`base_url` given as a list (or `endpoints:`) makes it a `ReplicatedOpenAIBackend`
(`honing.calls.backends.replicas`): several served replicas of one model, with
dispatch by free concurrency and failover. A single `base_url` string is this class.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import os
import random
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai

try:  # openai 3.x runs on httpx2; 2.x on httpx (same Response API for what we use)
    import httpx2 as _http
except ImportError:  # pragma: no cover - older client
    import httpx as _http  # type: ignore[no-redef]

from honing.calls.backends.base import (
    BackendError,
    ChatRequest,
    ChatResult,
    Completion,
    ResultCallback,
)

OPENAI_URL = "https://api.openai.com/v1"
RETRY_KINDS = ("rate_limit", "server_error", "timeout", "connection", "truncated", "malformed",
               "no_choices", "invalid_json")
MAX_RETRY_AFTER_S = 120.0  # like the SDK: a longer Retry-After is more likely a bug than advice
REPLICA_KEYS = ("endpoints", "replica_max_failures", "replica_cooldown_s")  # see backends/replicas.py


class _Retryable(Exception):
    def __init__(self, kind: str, detail: str, wait_s: float | None = None):
        super().__init__(detail)
        self.kind, self.detail, self.wait_s = kind, detail, wait_s


class _Aborted(Exception):
    """The batch is stopping (a fatal error or the caller's callback): do not retry."""


# ---- rate limiting ---------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def parse_reset(value: str) -> float | None:
    """Seconds in an `x-ratelimit-reset-*` header: "1s", "6m0s", "20ms", or a bare number."""
    try:
        return float(value)
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[unit] for n, unit in parts) if parts else None


class TokenBucket:
    """`per_minute` units refilled continuously, up to one second's worth in a burst.
    `None` means unlimited. Amounts larger than the burst pass when the bucket is full
    (leaving it in debt), so one big request is never blocked forever."""

    def __init__(self, per_minute: float | None):
        self.configured = per_minute
        self.per_minute = per_minute
        self.level = self.capacity
        self.updated = time.monotonic()
        self.blocked_until = 0.0

    @property
    def capacity(self) -> float:
        return max(1.0, (self.per_minute or 0) / 60)

    def set_server_limit(self, per_minute: float) -> None:
        # Follow the server's limit when it is tighter than ours (or we set none).
        if per_minute > 0:
            self.per_minute = min(per_minute, self.configured or per_minute)

    def block_for(self, seconds: float) -> None:
        self.blocked_until = max(self.blocked_until, time.monotonic() + seconds)

    def wait_time(self, amount: float) -> float:
        """Seconds to wait before `amount` may be taken (0: taken now)."""
        now = time.monotonic()
        if now < self.blocked_until:
            return self.blocked_until - now
        if self.per_minute is None:
            return 0.0
        rate = self.per_minute / 60
        self.level = min(self.capacity, self.level + (now - self.updated) * rate)
        self.updated = now
        need = min(amount, self.capacity)
        if self.level >= need:
            self.level -= amount
            return 0.0
        return (need - self.level) / rate


class RateLimiter:
    def __init__(self, requests_per_minute: float | None, tokens_per_minute: float | None):
        self.requests = TokenBucket(requests_per_minute)
        self.tokens = TokenBucket(tokens_per_minute)
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    async def acquire(self, tokens: int) -> None:
        now = time.monotonic()
        if all(b.per_minute is None and b.blocked_until <= now for b in (self.requests, self.tokens)):
            return  # no limit known: nothing to wait for
        loop = asyncio.get_running_loop()
        if self._lock_loop is not loop:  # each `generate` runs its own event loop
            self._lock, self._lock_loop = asyncio.Lock(), loop
        async with self._lock:  # first come, first served
            while True:
                wait = max(self.requests.wait_time(0), self.tokens.wait_time(0))
                if wait == 0:
                    wait = self.requests.wait_time(1)
                    if wait == 0:
                        wait = self.tokens.wait_time(tokens)
                        if wait > 0:
                            self.requests.level += 1  # give back the request slot taken above
                if wait == 0:
                    return
                await asyncio.sleep(wait)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Adapt to `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` when sent."""
        for kind, bucket in (("requests", self.requests), ("tokens", self.tokens)):
            limit = headers.get(f"x-ratelimit-limit-{kind}")
            remaining = headers.get(f"x-ratelimit-remaining-{kind}")
            reset = headers.get(f"x-ratelimit-reset-{kind}")
            try:
                if limit is not None:
                    bucket.set_server_limit(float(limit))
                if remaining is not None and float(remaining) <= 0 and reset is not None:
                    bucket.block_for(parse_reset(reset) or 0.0)
            except ValueError:  # a header we cannot read is advice we cannot take
                continue


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """The server's requested wait: `retry-after-ms`, else `Retry-After` (seconds or a date)."""
    if (value := headers.get("retry-after-ms")) is not None:
        try:
            return min(float(value) / 1000, MAX_RETRY_AFTER_S)
        except ValueError:
            pass
    if (value := headers.get("retry-after")) is not None:
        try:
            return min(float(value), MAX_RETRY_AFTER_S)
        except ValueError:
            when = email.utils.parsedate_to_datetime(value) if value else None
            if when is not None:
                return min(max(0.0, when.timestamp() - time.time()), MAX_RETRY_AFTER_S)
    return None


# ---- reply validation -------------------------------------------------------------------


def _required_keys(schema: Mapping[str, Any]) -> list[str]:
    return list(schema.get("required") or [])


def parse_reply(body: bytes, request: ChatRequest, model: str) -> ChatResult:
    """A `ChatResult` from a 200's body, or `_Retryable` saying what was wrong with it."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        # A JSON object cut short is truncation; anything else (a proxy's HTML page) is junk.
        kind = "truncated" if text.startswith("{") and not text.endswith("}") else "malformed"
        raise _Retryable(kind, f"200 with a body that is not JSON: {text[:60]!r}") from None
    if not isinstance(data, dict):
        raise _Retryable("malformed", f"200 with JSON {type(data).__name__}, expected an object")
    if "error" in data and not data.get("choices"):
        raise _Retryable("server_error", f"200 carrying an error: {str(data['error'])[:120]}")
    choices = data.get("choices")
    if not choices:
        raise _Retryable("no_choices", "200 with no choices")
    params = request.params
    if not isinstance(choices, list) or len(choices) < params.n:
        raise _Retryable("malformed", f"expected {params.n} choices, found {len(choices)}")
    completions = []
    for choice in sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0):
        content = (choice.get("message") or {}).get("content") if isinstance(choice, dict) else None
        if not isinstance(content, str):
            raise _Retryable("malformed", f"a choice without message content: {str(choice)[:80]}")
        if params.json_schema is not None:
            _check_json(content, params.json_schema)
        completions.append(Completion(text=content, finish_reason=choice.get("finish_reason") or "stop"))
    usage = data.get("usage") or {}
    # Without usage (some servers omit it) cost is estimated at ~4 characters a token.
    prompt_chars = sum(len(str(m.get("content", ""))) for m in request.messages)
    prompt_tokens = usage.get("prompt_tokens") or prompt_chars // 4
    completion_tokens = usage.get("completion_tokens") or sum(len(c.text) for c in completions) // 4
    return ChatResult(completions=tuple(completions[: params.n]), prompt_tokens=int(prompt_tokens),
                      completion_tokens=int(completion_tokens), model=str(data.get("model") or model))


def _check_json(content: str, schema: Mapping[str, Any]) -> None:
    try:
        value = json.loads(content)
    except json.JSONDecodeError:
        raise _Retryable("invalid_json", f"reply is not the JSON the schema asks for: {content[:60]!r}") from None
    missing = [k for k in _required_keys(schema) if not (isinstance(value, dict) and k in value)]
    if schema.get("type", "object") == "object" and not isinstance(value, dict):
        raise _Retryable("invalid_json", f"reply is JSON {type(value).__name__}, the schema asks for an object")
    if missing:
        raise _Retryable("invalid_json", f"reply JSON lacks required key(s) {missing}")


# ---- the backend --------------------------------------------------------------------------


def extra_suffix(extra: Mapping[str, Any]) -> str:
    """The model id's mark of extra body fields: they change the answers."""
    if not extra:
        return ""
    blob = json.dumps(dict(extra), sort_keys=True, default=str)
    return ":extra=" + hashlib.sha256(blob.encode()).hexdigest()[:12]


class OpenAIBackend:
    kind = "openai"

    def __new__(cls, model: str, base_url: Any = None, *args: Any, **options: Any):
        # Several endpoints (a list of base URLs, or `endpoints:`) are served replicas.
        if cls is OpenAIBackend and (isinstance(base_url, (list, tuple)) or "endpoints" in options):
            from honing.calls.backends.replicas import ReplicatedOpenAIBackend

            return super().__new__(ReplicatedOpenAIBackend)
        return super().__new__(cls)

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        max_concurrency: int = 64,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        timeout: float = 60.0,
        max_retries: int = 6,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        **extra: Any,
    ):
        """`extra` fields are sent in every request body (e.g. vLLM's `top_k`)."""
        misplaced = [key for key in REPLICA_KEYS if key in extra]
        if misplaced:
            raise BackendError(f"openai backend: {', '.join(misplaced)} set, but base_url is one URL "
                               f"({base_url}); list several replicas as base_url: [url, ...]")
        self.model = model
        self.base_url = (base_url or OPENAI_URL).rstrip("/")
        self.api_key_env = api_key_env
        self.max_concurrency = max(1, int(max_concurrency))
        self.timeout, self.max_retries = float(timeout), int(max_retries)
        self.initial_backoff_s, self.max_backoff_s = float(initial_backoff_s), float(max_backoff_s)
        self.extra = dict(extra)
        self.limiter = RateLimiter(requests_per_minute, tokens_per_minute)
        self.retry_counts: Counter = Counter({kind: 0 for kind in RETRY_KINDS})
        # Extra body fields change the answers, so they are part of the model's identity.
        self.model_id = f"openai:{self.base_url}:{model}{extra_suffix(self.extra)}"
        self._use_max_completion_tokens = False

    def close(self) -> None:  # each batch opens and closes its own client
        pass

    def _api_key(self) -> str:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            return key
        if self.base_url == OPENAI_URL:
            raise BackendError(f"openai backend: no API key for {OPENAI_URL}: set {self.api_key_env}")
        return "EMPTY"  # local servers (vLLM, honing serve) usually want none

    # ---- batch ------------------------------------------------------------------------
    def generate(self, requests: Sequence[ChatRequest], on_result: ResultCallback | None = None) -> list[ChatResult]:
        if not requests:
            return []
        coroutine = self._generate(list(requests), on_result)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coroutine)
        # Called from inside a running loop (a notebook): run ours in a thread of its own.
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, coroutine).result()

    def _open_client(self) -> Any:
        """The batch's client (one per `generate`: its connections belong to that event loop)."""
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=self._api_key(), max_retries=0,
                                  timeout=self.timeout)

    async def _generate(self, requests: list[ChatRequest], on_result: ResultCallback | None) -> list[ChatResult]:
        client = self._open_client()
        results: list[ChatResult | None] = [None] * len(requests)
        pending = iter(range(len(requests)))
        failure: list[BaseException] = []  # the first error stops the batch

        async def worker() -> None:
            # Workers take the next request only while nothing has failed, so a stop
            # leaves only the requests in flight to finish (and be reported/cached).
            for index in pending:
                if failure:
                    return
                try:
                    result = await self._answer(client, requests[index], failure)
                except _Aborted:
                    return
                except Exception as err:
                    failure.append(err)
                    return
                results[index] = result
                if on_result is not None:
                    try:
                        on_result(index, result)
                    except Exception as err:  # e.g. the budget: stop taking new work
                        failure.append(err)
                        return

        try:
            await asyncio.gather(*(worker() for _ in range(min(self.max_concurrency, len(requests)))))
        finally:
            await client.close()
        if failure:
            raise failure[0]
        return results  # type: ignore[return-value]

    # ---- one request ----------------------------------------------------------------------
    def _body(self, request: ChatRequest) -> dict[str, Any]:
        p = request.params
        body: dict[str, Any] = {"model": self.model, "messages": [dict(m) for m in request.messages],
                                "n": p.n, "temperature": p.temperature, "top_p": p.top_p}
        body["max_completion_tokens" if self._use_max_completion_tokens else "max_tokens"] = p.max_tokens
        if p.seed is not None:
            body["seed"] = p.seed
        if p.stop:
            body["stop"] = list(p.stop)
        if p.json_schema is not None:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "honing_reply", "schema": dict(p.json_schema)}}
        body.update(self.extra)
        if request.continue_final_message:  # vLLM's way to continue an assistant prefix
            body.update(continue_final_message=True, add_generation_prompt=False)
        return body

    def _backoff(self, attempt: int, wait_s: float | None) -> float:
        if wait_s is not None:  # the server said when: honour it, with a little jitter
            return wait_s * (1 + 0.1 * random.random())
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * 2**attempt)
        return ceiling * (0.5 + 0.5 * random.random())

    async def _answer(self, client: openai.AsyncOpenAI, request: ChatRequest, failure: list) -> ChatResult:
        p = request.params
        token_estimate = sum(len(str(m.get("content", ""))) for m in request.messages) // 4 + p.max_tokens * p.n
        last: _Retryable | None = None
        for attempt in range(self.max_retries + 1):
            await self.limiter.acquire(token_estimate)
            try:
                return await self._attempt(client, request)
            except _Retryable as err:
                last = err
            if attempt == self.max_retries or failure:
                break
            if last.kind != "param_switch":
                self.retry_counts[last.kind] += 1
            await asyncio.sleep(self._backoff(attempt, last.wait_s))
            if failure:
                break
        if failure:
            raise _Aborted()
        raise BackendError(self._exhausted_message(last))

    async def _attempt(self, client: openai.AsyncOpenAI, request: ChatRequest,
                       base_url: str | None = None) -> ChatResult:
        try:
            # The client's generic `post` (its documented way to reach any endpoint) sends
            # our JSON as is: `chat.completions.create` spends ~0.5 ms of CPU a call
            # re-validating params we build ourselves, which caps throughput at
            # concurrency 64. Replies are validated by `parse_reply` either way.
            response = await client.post("/chat/completions", cast_to=_http.Response, body=self._body(request))
        except openai.APITimeoutError:
            raise _Retryable("timeout", f"no reply within {self.timeout:g} s") from None
        except openai.APIConnectionError as err:
            cause = str(err.__cause__ or err)
            if "complete message body" in cause:
                raise _Retryable("truncated", "the connection closed half-way through the reply") from None
            raise _Retryable("connection", cause or "connection failed") from None
        except openai.APIStatusError as err:
            self.limiter.observe(err.response.headers)
            raise self._status_error(err, base_url) from None
        self.limiter.observe(response.headers)
        return parse_reply(response.content, request, self.model)

    def _status_error(self, err: openai.APIStatusError, base_url: str | None = None) -> Exception:
        """A `_Retryable` for what may pass (429, 5xx), a one-line `BackendError` otherwise.
        `base_url` names the server that answered (a replica's), default `self.base_url`."""
        status, message = err.status_code, _server_message(err)
        base_url = base_url or self.base_url
        where = f"the server at {base_url}"
        if status == 429:
            if "insufficient_quota" in str(err.body):
                return BackendError(f"openai backend: {where} says the account has no quota left "
                                    f"(429 insufficient_quota): {message}")
            return _Retryable("rate_limit", f"429 {message}", retry_after_s(err.response.headers))
        if status >= 500 or status in (408, 409):
            return _Retryable("server_error", f"{status} {message}", retry_after_s(err.response.headers))
        if status == 401:
            return BackendError(f"openai backend: {where} rejected the API key (401): "
                                f"set {self.api_key_env or 'an API key variable'} to a valid key")
        if status == 403:
            return BackendError(f"openai backend: {where} refused access to model {self.model!r} (403): {message}")
        if status == 404:
            if "model" in message.lower() or "model_not_found" in str(err.body):
                return BackendError(f"openai backend: model {self.model!r} not found at {base_url} (404): "
                                    f"check `model:` in params.yaml against {base_url}/models")
            return BackendError(f"openai backend: {base_url}/chat/completions does not exist (404): "
                                f"check base_url (it usually ends in /v1)")
        if status == 400 and "max_completion_tokens" in message and not self._use_max_completion_tokens:
            # Newer OpenAI models refuse `max_tokens`; switch once and retry (not a fault).
            self._use_max_completion_tokens = True
            return _Retryable("param_switch", message, 0.0)
        return BackendError(f"openai backend: {where} rejected the request ({status}): {message}")

    def _exhausted_message(self, last: _Retryable | None) -> str:
        attempts = self.max_retries + 1
        if last is not None and last.kind == "connection":
            return (f"openai backend: cannot reach the server at {self.base_url} after {attempts} attempts "
                    f"({last.detail}): is it running, and is base_url right?")
        detail = f"{last.kind}: {last.detail}" if last else "no attempt made"
        return f"openai backend: {self.base_url} gave no valid reply after {attempts} attempts (last: {detail})"


def _server_message(err: openai.APIStatusError) -> str:
    body = err.body
    if isinstance(body, dict):
        body = body.get("message") or body.get("error") or body
    return " ".join(str(body or err.message).split())[:200]
