"""Several served replicas of one model behind one openai backend (e.g. `vllm serve` on N hosts).

A role's params block lists them instead of one `base_url`:

    policy:
      backend: openai
      model: honing-policy          # the served model name, the same on every replica
      base_url: [http://a:8000/v1, http://b:8000/v1]   # each gets max_concurrency slots
      max_concurrency: 64
      # or, with a slot count per replica (a replica's share follows its slots):
      # endpoints:
      #   - {base_url: http://a:8000/v1, max_concurrency: 128}
      #   - http://b:8000/v1        # the role's max_concurrency
      replica_max_failures: 3       # failures in a row that set a replica aside
      replica_cooldown_s: 30        # how long it stays aside before it is tried again

Dispatch: every replica has its own in-flight limit (its slots), and each attempt goes
to the live replica with the most free slots. A slow replica keeps its slots busy
longer, so it is sent less; nothing is split up in advance.

Failover: a connection error, a timeout or a 5xx from a replica counts against that
replica, and the request is retried at once on another live replica (the backoff
applies only once every live replica has failed it). After `replica_max_failures`
such failures in a row a replica is set aside for `replica_cooldown_s`, then tried
again; one more failure sets it aside again, one answer clears its record. Other
retryable faults (429, a cut-off or invalid reply) are retried as on one server. The
batch stops with one line, naming every replica and its last error, only when no
replica is left (all set aside at once) or when a request runs out of retries.

Identity: `model_id` is `openai:replicas:<model>`, whatever the replicas are, so a
cache key never says which replica answered: a rerun with more, fewer or other
replicas repeats no call. Name the served model after its weights (vLLM's
`--served-model-name`), as every replica must serve the same ones.

Figures: `replica_figures()` gives, per replica, for the last batch: `answered`,
`errors` and `errors_<kind>`, `in_flight_peak` and `set_aside` (how many times). The
runner puts them in the stage's runtime file under `replicas`, never in metrics/.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import openai

from honing.calls.backends.base import BackendError, ChatRequest, ChatResult
from honing.calls.backends.openai_backend import OpenAIBackend, _Aborted, _Retryable, extra_suffix

# The faults that say something about the replica rather than the request.
HEALTH_KINDS = frozenset({"connection", "timeout", "server_error"})


def shown_url(url: str) -> str:
    """`url` without a password, for figures and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}@{host}" if parts.username else host))


@dataclass(eq=False)
class Replica:
    """One served endpoint: its slots, its health across batches, its figures for this batch."""

    url: str
    max_concurrency: int
    failures: int = 0  # health failures in a row (an answer resets it)
    aside_until: float = 0.0  # time.monotonic() until which it is set aside
    last_error: str = ""
    # figures of the current batch
    in_flight: int = 0
    in_flight_peak: int = 0
    answered: int = 0
    set_aside: int = 0
    errors: Counter = field(default_factory=Counter)

    def live(self, now: float) -> bool:
        return now >= self.aside_until

    @property
    def free(self) -> int:
        return self.max_concurrency - self.in_flight

    def figures(self) -> dict[str, int]:
        return {"answered": self.answered, "errors": sum(self.errors.values()),
                **{f"errors_{kind}": n for kind, n in sorted(self.errors.items())},
                "in_flight_peak": self.in_flight_peak, "set_aside": self.set_aside}


def parse_endpoints(base_url: Any, endpoints: Any, max_concurrency: int) -> list[Replica]:
    """Replicas from `base_url: [url, ...]` or `endpoints: [url | {base_url, max_concurrency}, ...]`."""
    if base_url is not None and endpoints is not None:
        raise BackendError("openai backend: give base_url or endpoints, not both")
    name, entries = ("endpoints", endpoints) if endpoints is not None else ("base_url", base_url)
    if not isinstance(entries, (list, tuple)) or not entries:
        raise BackendError(f"openai backend: {name} must be a non-empty list of base URLs, found {entries!r}")
    replicas: list[Replica] = []
    for i, entry in enumerate(entries):
        where = f"openai backend: {name}[{i}]"
        slots: Any = max_concurrency
        if isinstance(entry, Mapping):
            unknown = sorted(map(str, set(entry) - {"base_url", "max_concurrency"}))
            if unknown or "base_url" not in entry:
                raise BackendError(f"{where}: expected a URL or {{base_url, max_concurrency}}, "
                                   f"found keys {sorted(map(str, entry))}")
            url, slots = entry["base_url"], entry.get("max_concurrency", max_concurrency)
        else:
            url = entry
        if not isinstance(url, str) or not url.strip():
            raise BackendError(f"{where}: expected a base URL such as http://host:8000/v1, found {url!r}")
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise BackendError(f"{where}: max_concurrency must be an integer >= 1, found {slots!r}")
        url = url.strip().rstrip("/")
        if any(r.url == url for r in replicas):
            raise BackendError(f"{where}: {shown_url(url)} is listed twice")
        replicas.append(Replica(url, slots))
    return replicas


class ReplicaPool:
    """The replicas' slots and health. One event loop at a time (each batch runs its own);
    everything here runs on that loop's thread, so no locks are needed."""

    def __init__(self, replicas: Sequence[Replica], max_failures: int, cooldown_s: float):
        self.replicas = list(replicas)
        self.max_failures, self.cooldown_s = max_failures, cooldown_s
        self._waiters: list[asyncio.Future] = []

    def start_batch(self) -> None:
        """Fresh figures (health carries over: a replica set aside stays aside)."""
        self._waiters = []
        for r in self.replicas:
            r.in_flight = r.in_flight_peak = r.answered = r.set_aside = 0
            r.errors = Counter()

    def live(self, now: float | None = None) -> list[Replica]:
        now = time.monotonic() if now is None else now
        return [r for r in self.replicas if r.live(now)]

    async def acquire(self, avoid: set[Replica]) -> Replica:
        """A slot on the live replica with the most free slots, preferring those not in `avoid`
        (they failed this request). Waits while every candidate is full."""
        while True:
            now = time.monotonic()
            live = self.live(now)
            if not live:
                raise BackendError(self.none_left_message())
            candidates = [r for r in live if r not in avoid] or live
            best = max(candidates, key=lambda r: r.free)  # ties: the first listed
            if best.free > 0:
                best.in_flight += 1
                best.in_flight_peak = max(best.in_flight_peak, best.in_flight)
                return best
            # Wait for a released slot, or for a replica's cool-down to end.
            returns = [r.aside_until - now for r in self.replicas if not r.live(now)]
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await asyncio.wait([waiter], timeout=min(returns) if returns else None)

    def release(self, replica: Replica, error: _Retryable | None = None, answered: bool = False) -> None:
        """Give the slot back, booking the attempt's outcome against the replica."""
        replica.in_flight -= 1
        if answered:
            replica.answered += 1
            replica.failures = 0
        elif error is not None:
            replica.errors[error.kind] += 1
            if error.kind in HEALTH_KINDS:
                replica.failures += 1
                replica.last_error = f"{error.kind}: {' '.join(error.detail.split())[:80]}"
                now = time.monotonic()
                if replica.failures >= self.max_failures and replica.live(now):
                    replica.aside_until = now + self.cooldown_s
                    replica.set_aside += 1
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def none_left_message(self) -> str:
        each = "; ".join(f"{shown_url(r.url)} ({r.last_error or 'no error'})" for r in self.replicas)
        return (f"openai backend: no replica left, all {len(self.replicas)} set aside after "
                f"{self.max_failures} failures in a row: {each}: are they running, and are the URLs right?")


class _Clients(dict):
    """One client per replica for one batch."""

    async def close(self) -> None:
        for client in self.values():
            await client.close()


class ReplicatedOpenAIBackend(OpenAIBackend):
    """`OpenAIBackend` over several replicas; `OpenAIBackend(model, base_url=[...])` or
    `endpoints=[...]` builds one. `max_concurrency` is the total of the replicas' slots."""

    def __init__(
        self,
        model: str,
        base_url: Any = None,
        *args: Any,
        endpoints: Any = None,
        max_concurrency: int = 64,
        replica_max_failures: int = 3,
        replica_cooldown_s: float = 30.0,
        **options: Any,
    ):
        replicas = parse_endpoints(base_url, endpoints, max(1, int(max_concurrency)))
        if isinstance(replica_max_failures, bool) or not isinstance(replica_max_failures, int) \
                or replica_max_failures < 1:
            raise BackendError(f"openai backend: replica_max_failures must be an integer >= 1, "
                               f"found {replica_max_failures!r}")
        if isinstance(replica_cooldown_s, bool) or not isinstance(replica_cooldown_s, (int, float)) \
                or replica_cooldown_s < 0:
            raise BackendError(f"openai backend: replica_cooldown_s must be a number of seconds >= 0, "
                               f"found {replica_cooldown_s!r}")
        super().__init__(model, replicas[0].url, *args, max_concurrency=max_concurrency, **options)
        self.pool = ReplicaPool(replicas, replica_max_failures, float(replica_cooldown_s))
        self.max_concurrency = sum(r.max_concurrency for r in replicas)  # the batch's workers
        # Which replica answers is not part of the answer: one identity for any replica set.
        self.model_id = f"openai:replicas:{model}{extra_suffix(self.extra)}"

    @property
    def replicas(self) -> list[Replica]:
        return self.pool.replicas

    def replica_figures(self) -> dict[str, dict[str, int]]:
        """Per replica (its URL), the last batch's answered, errors by kind, in-flight peak, set-asides."""
        return {shown_url(r.url): r.figures() for r in self.replicas}

    def _open_client(self) -> _Clients:
        key = self._api_key()
        self.pool.start_batch()
        return _Clients({r.url: openai.AsyncOpenAI(base_url=r.url, api_key=key, max_retries=0,
                                                   timeout=self.timeout) for r in self.replicas})

    async def _answer(self, clients: _Clients, request: ChatRequest, failure: list) -> ChatResult:
        p = request.params
        token_estimate = sum(len(str(m.get("content", ""))) for m in request.messages) // 4 + p.max_tokens * p.n
        last: _Retryable | None = None
        last_url = ""
        failed_on: set[Replica] = set()  # replicas this request failed on since its last backoff
        for attempt in range(self.max_retries + 1):
            await self.limiter.acquire(token_estimate)
            if failure:
                break
            replica = await self.pool.acquire(failed_on)
            try:
                result = await self._attempt(clients[replica.url], request, shown_url(replica.url))
            except _Retryable as err:
                self.pool.release(replica, error=err)
                last, last_url = err, shown_url(replica.url)
            except BaseException:
                self.pool.release(replica)
                raise
            else:
                self.pool.release(replica, answered=True)
                return result
            if attempt == self.max_retries or failure:
                break
            if last.kind != "param_switch":
                self.retry_counts[last.kind] += 1
            if last.kind in HEALTH_KINDS:
                failed_on.add(replica)
                if any(r not in failed_on for r in self.pool.live()):
                    continue  # fail over to a replica that has not failed it: no wait
                failed_on.clear()
            await asyncio.sleep(self._backoff(attempt, last.wait_s))
            if failure:
                break
        if failure:
            raise _Aborted()
        detail = f"{last.kind}: {last.detail}" if last else "no attempt made"
        raise BackendError(f"openai backend: no valid reply from {len(self.replicas)} replicas after "
                           f"{self.max_retries + 1} attempts (last from {last_url}: {detail})")
