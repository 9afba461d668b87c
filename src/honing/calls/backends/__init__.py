"""Backends: one interface (`Backend.generate`) with transformers, vllm, openai and ray kinds.

`make_backend(spec, model)` builds one from a role's block in params.yaml, e.g.
``{"backend": "openai", "model": "gpt-4o-mini", "base_url": ..., "max_concurrency": 64}``.
Imports are lazy so that a stage using only one backend never imports the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from honing.calls.backends.base import (
    Backend,
    BackendError,
    ChatRequest,
    ChatResult,
    Completion,
    SamplingParams,
)

__all__ = [
    "Backend",
    "BackendError",
    "ChatRequest",
    "ChatResult",
    "Completion",
    "SamplingParams",
    "make_backend",
]

_OPTION_KEYS_IGNORED = {"backend", "model", "price"}


def make_backend(spec: Mapping[str, Any], model: str | None = None) -> Backend:
    """Build the backend a role's params block names. `model` overrides `spec["model"]`
    (stages pass the current iteration's checkpoint this way)."""
    kind = spec.get("backend", "transformers")
    if kind == "ray":
        from honing.calls.backends.ray_backend import engine_for

        if engine_for(spec) == "http":  # an endpoint serves the model params name, as with `openai`
            model = spec.get("model") or model
    model = model or spec.get("model")
    if not model:
        raise BackendError(f"backend {kind!r}: no model given (set `model:` in params.yaml)")
    options = {k: v for k, v in spec.items() if k not in _OPTION_KEYS_IGNORED}
    if kind == "transformers":
        from honing.calls.backends.transformers_backend import TransformersBackend

        return TransformersBackend(model, **options)
    if kind == "vllm":
        from honing.calls.backends.vllm_backend import VLLMBackend

        return VLLMBackend(model, **options)
    if kind == "openai":
        from honing.calls.backends.openai_backend import OpenAIBackend

        return OpenAIBackend(model, **options)
    if kind == "ray":
        from honing.calls.backends.ray_backend import RayBackend

        return RayBackend(model, **options)
    raise BackendError(f"unknown backend {kind!r}: expected transformers, vllm, openai or ray")
