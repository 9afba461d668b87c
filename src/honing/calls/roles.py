"""A role (policy, critic, judge): a backend plus the request cache, prices and budget.

Stages build one `Role` per role from its params block and call `role.call(...)`;
every call goes through `honing.calls.runner.run_requests`, so it is cached by its full
request, priced, budgeted and shown with progress. `role.metrics()` sums the calls.
A role has one `Budget` for its whole life (one stage process), so every call counts
against its caps; with a `SpendScope` each paid answer is booked in the spend ledger.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from honing.calls.backends import Backend, ChatRequest, ChatResult, make_backend
from honing.calls.cache import RequestCache, default_cache_path
from honing.calls.ledger import Budget, SpendScope, check_cap
from honing.calls.runner import CallStats, Pricing, run_requests


@dataclass
class Role:
    name: str
    backend: Backend
    cache: RequestCache | None = None
    pricing: Pricing | None = None
    budget: Budget | None = None
    stats: list[CallStats] = field(default_factory=list)

    @classmethod
    def from_params(
        cls, name: str, spec: Mapping[str, Any], model: str | None = None, *,
        cache: RequestCache | None = None, scope: SpendScope | None = None, params_path: str | None = None,
    ) -> Role:
        """The role `name` from its params block. `scope` books its spend in the ledger
        and adds the run's cap to the role's own `max_cost_usd`; `params_path` is where
        the block sits in params.yaml (default: `name`), for error messages.

        Several served replicas (openai backend; `honing.calls.backends.replicas`):
        `base_url: [http://a:8000/v1, http://b:8000/v1]`, each with `max_concurrency`
        slots, or `endpoints: [{base_url: ..., max_concurrency: 32}, http://c:8000/v1]`
        for slots per replica. Each call goes to the live replica with the most free
        slots; connection errors, timeouts and 5xx move a call to another replica, and
        `replica_max_failures` (3) of them in a row set a replica aside for
        `replica_cooldown_s` (30). The stage fails (one line) only when no replica is
        left. The cache key is the same whichever replicas answer (`openai:replicas:
        <model>`); each replica's answered, errors by kind, in-flight peak and
        set-asides go to `runtime()["replicas"]`, never to `metrics()`."""
        spec = dict(spec)
        where = f"params.yaml `{params_path or name}"
        pricing = Pricing.from_params(spec.pop("price", None), where=f"{where}.price`")
        cap = check_cap(spec.pop("max_cost_usd", None), f"{where}.max_cost_usd`")
        use_cache = spec.pop("cache", True)
        backend = make_backend(spec, model=model)
        if use_cache and cache is None:
            cache = RequestCache(default_cache_path())
        budget = scope.budget(name, cap) if scope is not None else Budget(cap)
        return cls(name, backend, cache if use_cache else None, pricing, budget)

    @property
    def model_id(self) -> str:
        return self.backend.model_id

    def call(self, requests: Sequence[ChatRequest], desc: str = "") -> list[ChatResult]:
        results, stats = run_requests(
            self.backend, requests, cache=self.cache, pricing=self.pricing,
            budget=self.budget, desc=desc or self.name,
        )
        self.stats.append(stats)
        return results

    def metrics(self) -> dict[str, Any]:
        """Summed data-determined call figures of this role (`CallStats.to_metrics`)."""
        return _sum(s.to_metrics() for s in self.stats)

    def runtime(self) -> dict[str, Any]:
        """Summed per-run call figures of this role (`CallStats.to_runtime`)."""
        return _sum(s.to_runtime() for s in self.stats)

    def close(self) -> None:
        self.backend.close()


def _sum(dicts) -> dict[str, Any]:
    """Figures added up key by key; nested blocks (per replica) likewise; `*_peak` keeps the max."""
    total: dict[str, Any] = {}
    for d in dicts:
        for k, v in d.items():
            if isinstance(v, Mapping):
                total[k] = _sum([total.get(k, {}), v])
            elif k.endswith("_peak"):
                total[k] = max(total.get(k, 0), v)
            else:
                total[k] = round(total.get(k, 0) + v, 6)
    return total
