"""The one way honing calls a model: cache first, then the backend, with cost and a budget.

`run_requests` looks every request up in the request cache, sends only the misses
(each distinct request once) to `backend.generate`, stores each answer the moment it
arrives, and returns results in request order with a `CallStats` for the stage's
metrics file. Each paid answer is booked with the `Budget` (in the spend ledger, see
`honing.calls.ledger`) before it is cached, and the budget stops a stage cleanly when
its next call would pass a cap; everything answered before the stop stays cached, so
raising the cap and rerunning pays only for what is still missing.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from honing.calls.backends.base import Backend, BackendError, ChatRequest, ChatResult
from honing.calls.cache import RequestCache
from honing.calls.ledger import Budget, CostSettingError

__all__ = ["Budget", "BudgetExceeded", "CallStats", "Pricing", "run_requests"]


@dataclass(frozen=True)
class Pricing:
    """US dollars per million tokens; a role's `price:` block in params.yaml.
    Zero (the default) for local models."""

    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0

    @classmethod
    def from_params(cls, block: Any, where: str = "price") -> Pricing:
        """From e.g. ``{"input_per_mtok": 0.15, "output_per_mtok": 0.60}``; None -> free.
        A bad block raises `CostSettingError` naming `where` (e.g. "params.yaml `policy.price`")."""
        expected = "input_per_mtok and/or output_per_mtok (US dollars per million tokens)"
        if block is None:
            return cls()
        if not isinstance(block, Mapping):
            raise CostSettingError(f"{where}: expected a mapping of {expected}, found {block!r}")
        unknown = sorted(map(str, set(block) - {"input_per_mtok", "output_per_mtok"}))
        if unknown:
            raise CostSettingError(f"{where}: unknown key(s) {', '.join(unknown)}; expected {expected}")
        for key, value in block.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise CostSettingError(f"{where}: {key} must be a number of US dollars per million tokens, "
                                       f"found {value!r}")
            if value < 0:
                raise CostSettingError(f"{where}: {key} must be >= 0, found {value!r}")
        return cls(**{k: float(v) for k, v in block.items()})

    def cost(self, result: ChatResult) -> float:
        return (result.prompt_tokens * self.input_per_mtok
                + result.completion_tokens * self.output_per_mtok) / 1e6


class BudgetExceeded(BackendError):
    """The budget would be passed; answers so far are cached. The message is one line."""


@dataclass
class CallStats:
    requests: int = 0
    cache_hits: int = 0
    cache_misses: int = 0  # distinct requests sent to the backend
    cache_bytes_written: int = 0
    prompt_tokens: int = 0  # of new calls only: cached answers cost nothing
    completion_tokens: int = 0
    cost_usd: float = 0.0
    retries: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    # Of every answer the stage used, cached or new: what producing its data costs.
    # These depend on the data alone, so they can sit in DVC-hashed metrics.
    data_prompt_tokens: int = 0
    data_completion_tokens: int = 0
    data_cost_usd: float = 0.0
    # Per served replica (a backend with several), its figures for this batch:
    # answered, errors (errors_<kind>), in_flight_peak, set_aside. Runtime only.
    replicas: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_metrics(self) -> dict[str, Any]:
        """What the stage's data determines: every answer it used, cached or new, with
        its tokens and estimated cost. Equal data gives equal figures, so these can
        sit in DVC-hashed metrics files."""
        return {
            "requests": self.requests,
            "prompt_tokens": self.data_prompt_tokens,
            "completion_tokens": self.data_completion_tokens,
            "cost_usd": round(self.data_cost_usd, 6),
        }

    def to_runtime(self) -> dict[str, Any]:
        """What changes from one run to the next with the same data (the cache's state,
        the network, the machine): cache hits, new tokens, money newly spent, seconds,
        retries (`retries_<kind>` per kind), and each replica's share and errors (`replicas`)
        when the backend spreads calls over several."""
        runtime = {
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "cache_bytes_written": self.cache_bytes_written,
            "new_prompt_tokens": self.prompt_tokens,
            "new_completion_tokens": self.completion_tokens,
            "spent_usd": round(self.cost_usd, 6),
            "seconds": round(self.seconds, 3),
            "retries": sum(self.retries.values()),
        }
        runtime.update({f"retries_{kind}": count for kind, count in sorted(self.retries.items())})
        if self.replicas:
            runtime["replicas"] = {url: dict(figures) for url, figures in self.replicas.items()}
        return runtime


def _retry_counts(backend: Backend) -> dict[str, int]:
    return dict(getattr(backend, "retry_counts", None) or {})


def _replica_figures(backend: Backend) -> dict[str, dict[str, int]]:
    figures = getattr(backend, "replica_figures", None)
    return figures() if callable(figures) else {}


def _since(before: Mapping[str, int], now: Mapping[str, int]) -> dict[str, int]:
    return {kind: now[kind] - before.get(kind, 0) for kind in now if now[kind] - before.get(kind, 0)}


def run_requests(
    backend: Backend,
    requests: Sequence[ChatRequest],
    *,
    cache: RequestCache | None,
    pricing: Pricing | None = None,
    budget: Budget | None = None,
    desc: str = "",
) -> tuple[list[ChatResult], CallStats]:
    """Answer `requests` (cached answers first), in request order, with call stats.

    Raises `BudgetExceeded` when the budget stops the run, and `BackendError` when the
    backend cannot answer; every answer received before either is already cached.
    """
    started = time.monotonic()
    pricing = pricing or Pricing()
    stats = CallStats(requests=len(requests))
    keys = [request.cache_key(backend.model_id) for request in requests]
    found = cache.get_many(keys) if cache is not None else {}
    stats.cache_hits = sum(1 for key in keys if key in found)

    # Each distinct missing request is sent once; duplicates share its answer.
    miss_keys = [key for key in dict.fromkeys(keys) if key not in found]
    first_position = {key: position for position, key in reversed(list(enumerate(keys)))}
    to_send = [requests[first_position[key]] for key in miss_keys]
    stats.cache_misses = len(to_send)

    retries_before = _retry_counts(backend)
    answered = 0
    next_postfix = 0.0
    progress = tqdm(total=len(to_send), desc=desc or backend.model_id, unit="req", file=sys.stderr,
                    disable=not to_send, mininterval=0.5, dynamic_ncols=True,
                    delay=1.0)  # no bar for calls that fail (or finish) at once

    paid = pricing != Pricing()
    checked = budget is not None and budget.capped and paid  # a free model is never stopped

    def on_result(index: int, result: ChatResult) -> None:
        nonlocal answered, next_postfix
        key = miss_keys[index]
        if key in found:  # a backend reporting one request twice: keep the first answer
            return
        found[key] = result
        answered += 1
        cost = pricing.cost(result)
        # Book the money first, then store the answer: a kill in between leaves it booked
        # but not cached, so the rerun pays (and books) it again, as it should; the other
        # order could lose a paid answer from the ledger.
        if budget is not None and paid:
            budget.charge(backend.model_id, key, result.prompt_tokens, result.completion_tokens, cost)
        if cache is not None:
            stats.cache_bytes_written += cache.put(key, result, backend.model_id)
        stats.prompt_tokens += result.prompt_tokens
        stats.completion_tokens += result.completion_tokens
        stats.cost_usd += cost
        # Formatting the postfix costs as much as the rest of this callback: twice a second.
        now = time.monotonic()
        if now >= next_postfix or answered == len(to_send):
            next_postfix = now + 0.5
            retries = _since(retries_before, _retry_counts(backend))
            progress.set_postfix(retries=sum(retries.values()),
                                 tokens=stats.prompt_tokens + stats.completion_tokens,
                                 cost=f"${stats.cost_usd:.4f}", refresh=False)
        progress.update(1)
        if checked and answered < len(to_send):
            # Stop before the call that would pass a cap, judged by this batch's mean cost.
            if budget.remaining()[0] < stats.cost_usd / answered:
                raise BudgetExceeded(budget.stop_message(len(to_send) - answered))

    if checked and to_send:
        budget.refresh()  # what earlier attempts, other roles and other processes spent since
        # Before the first call, judge by the mean of the role's earlier paid calls here.
        left, mean = budget.remaining()[0], budget.mean_cost()
        if left <= 0 or (mean is not None and left < mean):
            progress.close()
            raise BudgetExceeded(budget.stop_message(len(to_send)))
    try:
        if to_send:
            returned = backend.generate(to_send, on_result=on_result)
            # A backend that skipped `on_result` for some requests still returned them.
            for index, result in enumerate(returned or ()):
                if result is not None and index < len(miss_keys) and miss_keys[index] not in found:
                    on_result(index, result)
    except BudgetExceeded:
        # Answers in flight at the stop arrived (booked and cached) after the first
        # complaint; report what was really spent and what really remains.
        raise BudgetExceeded(budget.stop_message(len(to_send) - answered)) from None
    finally:
        progress.close()
        stats.retries = _since(retries_before, _retry_counts(backend))
        if to_send:
            stats.replicas = _replica_figures(backend)
        stats.seconds = time.monotonic() - started

    missing = [key for key in miss_keys if key not in found]
    if missing:
        raise BackendError(f"backend {backend.model_id}: returned without answering "
                           f"{len(missing)} of {len(to_send)} requests")
    results = [found[key] for key in keys]
    stats.data_prompt_tokens = sum(r.prompt_tokens for r in results)
    stats.data_completion_tokens = sum(r.completion_tokens for r in results)
    stats.data_cost_usd = sum(pricing.cost(r) for r in results)
    return results, stats
