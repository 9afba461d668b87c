"""The one way honing calls a model: cache first, then the backend, with cost and a budget.

`run_requests` looks every request up in the request cache, sends only the misses
(each distinct request once) to `backend.generate`, stores each answer the moment it
arrives, and returns results in request order with a `CallStats` for the stage's
metrics file. A `Budget` stops a stage cleanly when its new calls would pass a spend
cap; everything answered before the stop stays cached, so raising the cap and
rerunning pays only for what is still missing.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from tqdm import tqdm

from honing.calls.backends.base import Backend, BackendError, ChatRequest, ChatResult
from honing.calls.cache import RequestCache


@dataclass(frozen=True)
class Pricing:
    """US dollars per million tokens; a role's `price:` block in params.yaml.
    Zero (the default) for local models."""

    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0

    @classmethod
    def from_params(cls, block: Mapping[str, Any] | None) -> "Pricing":
        """From e.g. ``{"input_per_mtok": 0.15, "output_per_mtok": 0.60}``; None -> free."""
        block = dict(block or {})
        unknown = sorted(set(block) - {"input_per_mtok", "output_per_mtok"})
        if unknown:
            raise ValueError(f"price block: unknown key(s) {unknown}; "
                             f"expected input_per_mtok and output_per_mtok (USD per million tokens)")
        return cls(**{k: float(v) for k, v in block.items()})

    def cost(self, result: ChatResult) -> float:
        return (result.prompt_tokens * self.input_per_mtok
                + result.completion_tokens * self.output_per_mtok) / 1e6


@dataclass(frozen=True)
class Budget:
    """A cap on what one stage may spend on new (uncached) calls, in US dollars."""

    max_cost_usd: float


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
        retries (`retries_<kind>` per kind)."""
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
        return runtime


def _retry_counts(backend: Backend) -> dict[str, int]:
    return dict(getattr(backend, "retry_counts", None) or {})


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

    def on_result(index: int, result: ChatResult) -> None:
        nonlocal answered, next_postfix
        key = miss_keys[index]
        if key in found:  # a backend reporting one request twice: keep the first answer
            return
        found[key] = result
        answered += 1
        # Store first: whatever happens next (budget, kill), this answer is paid for.
        if cache is not None:
            stats.cache_bytes_written += cache.put(key, result, backend.model_id)
        stats.prompt_tokens += result.prompt_tokens
        stats.completion_tokens += result.completion_tokens
        stats.cost_usd += pricing.cost(result)
        # Formatting the postfix costs as much as the rest of this callback: twice a second.
        now = time.monotonic()
        if now >= next_postfix or answered == len(to_send):
            next_postfix = now + 0.5
            retries = _since(retries_before, _retry_counts(backend))
            progress.set_postfix(retries=sum(retries.values()),
                                 tokens=stats.prompt_tokens + stats.completion_tokens,
                                 cost=f"${stats.cost_usd:.4f}", refresh=False)
        progress.update(1)
        if budget is not None and answered < len(to_send):
            # Stop before the call that would pass the cap, judged by the mean cost so far.
            if stats.cost_usd + stats.cost_usd / answered > budget.max_cost_usd:
                raise BudgetExceeded(_budget_message(stats, budget, answered, len(to_send) - answered))

    if budget is not None and to_send and budget.max_cost_usd <= 0 and pricing != Pricing():
        progress.close()
        raise BudgetExceeded(_budget_message(stats, budget, 0, len(to_send)))
    try:
        if to_send:
            returned = backend.generate(to_send, on_result=on_result)
            # A backend that skipped `on_result` for some requests still returned them.
            for index, result in enumerate(returned or ()):
                if result is not None and index < len(miss_keys) and miss_keys[index] not in found:
                    on_result(index, result)
    except BudgetExceeded:
        # Answers in flight at the stop arrived (and were cached) after the first
        # complaint; count what really remains.
        raise BudgetExceeded(_budget_message(stats, budget, answered, len(to_send) - answered)) from None
    finally:
        progress.close()
        stats.retries = _since(retries_before, _retry_counts(backend))
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


def _budget_message(stats: CallStats, budget: Budget, answered: int, remaining: int) -> str:
    return (f"budget reached: spent ${stats.cost_usd:.4f} of max_cost_usd ${budget.max_cost_usd:.4f} "
            f"on {answered} new calls; {remaining} requests remain unanswered. "
            f"Raise max_cost_usd and rerun: the answers so far are cached and cost nothing again.")
