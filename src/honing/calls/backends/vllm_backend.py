"""Local generation with vLLM's offline engine (`vllm.LLM`), started once per backend.

Prompts are rendered here with the model's own chat template (per request, because
`continue_final_message` can differ between requests) and sent as token ids, so one
`llm.generate` call serves a whole chunk whatever its mix of params and templates.
Chunks exist only so that results reach `on_result` (and the request cache) while a
long run is still going; inside a chunk vLLM schedules everything continuously.

vLLM is an optional extra with its own pins (it runs in `.venv-vllm` in CI); it is
imported when a backend is built, never at module import.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from honing.calls.backends.base import (
    BackendError,
    ChatRequest,
    ChatResult,
    Completion,
    ResultCallback,
    SamplingParams,
    chat_prompt_ids,
)
from honing.calls.backends.transformers_backend import model_identity

# vLLM accepts only these LoRA ranks for `max_lora_rank`.
_VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


class VLLMBackend:
    """Batched generation with the vLLM engine.

    `lora_path` is a PEFT adapter folder applied to every request (the base weights
    stay loaded once). `seed` seeds the engine for requests that carry no seed of
    their own; a request's `params.seed` makes its samples reproducible on its own.
    `chunk_size` is how many requests go to the engine per call (results are
    reported after each call).
    """

    kind = "vllm"

    def __init__(
        self,
        model: str,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        lora_path: str | None = None,
        dtype: str = "auto",
        seed: int = 0,
        enforce_eager: bool = False,
        chunk_size: int = 4096,
        revision: str | None = None,
        **ignored: Any,
    ) -> None:
        try:
            import vllm
            from vllm.lora.request import LoRARequest
        except ImportError as e:
            raise BackendError(
                f"backend 'vllm' needs vLLM, which is not importable here ({' '.join(str(e).split())}): "
                "pip install 'honing[vllm]' (CI runs it in .venv-vllm, see .ci/vllm-tests)"
            ) from e
        if chunk_size < 1:
            raise BackendError(f"vllm backend: chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = chunk_size

        lora_options: dict[str, Any] = {}
        self._lora = None
        if lora_path is not None:
            rank = _adapter_rank(Path(lora_path))
            lora_options = {"enable_lora": True, "max_lora_rank": _vllm_lora_rank(rank), "max_loras": 1}
            self._lora = LoRARequest("honing-adapter", 1, str(Path(lora_path).resolve()))

        # Name the weights before the engine starts: a folder without weights fails
        # here with a plain message rather than deep inside an engine process.
        self.model_id = model_identity(model, revision)
        if lora_path is not None:
            self.model_id += f"+lora:{model_identity(lora_path)}"
        try:
            self._llm = vllm.LLM(
                model=model,
                revision=revision,
                tensor_parallel_size=tensor_parallel_size,
                gpu_memory_utilization=gpu_memory_utilization,
                max_model_len=max_model_len,
                dtype=dtype,
                seed=seed,
                enforce_eager=enforce_eager,
                **lora_options,
            )
        except Exception as e:  # engine start fails in many ways; say which model and why
            reason = " ".join(str(e).split())  # BackendError messages are one line
            raise BackendError(f"vLLM could not start model {model!r}: {type(e).__name__}: {reason}") from e
        self._tokenizer = self._llm.get_tokenizer()
        if getattr(self._tokenizer, "chat_template", None) is None:
            raise BackendError(
                f"model {model!r} has no chat template (tokenizer_config.json / chat_template.jinja); "
                "honing sends chat requests only"
            )
        self._max_model_len = self._llm.llm_engine.model_config.max_model_len
        self._structured_outputs = _structured_outputs_factory()

    # -- public interface -------------------------------------------------------------

    def generate(
        self, requests: Sequence[ChatRequest], on_result: ResultCallback | None = None
    ) -> list[ChatResult]:
        results: list[ChatResult] = []
        for start in range(0, len(requests), self.chunk_size):
            chunk = requests[start : start + self.chunk_size]
            prompts = [{"prompt_token_ids": ids} for ids in self._prompt_ids(start, chunk)]
            params = [self._sampling_params(r.params) for r in chunk]
            outputs = self._llm.generate(prompts, params, use_tqdm=False, lora_request=self._lora)
            for k, output in enumerate(outputs):  # vLLM returns outputs in prompt order
                result = self._result(output, chunk[k].params.n)
                results.append(result)
                if on_result is not None:
                    on_result(start + k, result)
        return results

    def close(self) -> None:
        import gc

        llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None:
            # Stop the engine process now rather than whenever the object is collected.
            engine_core = getattr(llm.llm_engine, "engine_core", None)
            if engine_core is not None and hasattr(engine_core, "shutdown"):
                engine_core.shutdown()
            del llm
        gc.collect()

    # -- steps ------------------------------------------------------------------------

    def _prompt_ids(self, start: int, requests: Sequence[ChatRequest]) -> list[list[int]]:
        return chat_prompt_ids(self._tokenizer, requests, self._max_model_len, start)

    def _sampling_params(self, params: SamplingParams) -> Any:
        import vllm

        extra = {}
        if params.json_schema is not None:
            extra = self._structured_outputs(params.json_schema)
        return vllm.SamplingParams(
            # vLLM refuses n > 1 when greedy; the n answers would be equal anyway (see _result).
            n=params.n if params.temperature > 0 else 1,
            temperature=params.temperature,  # 0 is greedy in vLLM
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            seed=params.seed,
            stop=list(params.stop) or None,
            skip_special_tokens=True,
            **extra,
        )

    def _result(self, output: Any, n: int) -> ChatResult:
        samples = list(output.outputs)
        if len(samples) < n:  # greedy with n > 1: one answer stands for all n, as generate would give
            samples = samples * n
        return ChatResult(
            completions=tuple(Completion(text=c.text, finish_reason=c.finish_reason or "length") for c in samples),
            prompt_tokens=len(output.prompt_token_ids),
            completion_tokens=sum(len(c.token_ids) for c in samples),
            model=self.model_id,
        )


def _structured_outputs_factory():
    """Map a JSON schema to SamplingParams keywords for whichever API this vLLM has."""
    try:
        from vllm.sampling_params import StructuredOutputsParams  # vLLM >= 0.11

        return lambda schema: {"structured_outputs": StructuredOutputsParams(json=dict(schema))}
    except ImportError:
        from vllm.sampling_params import GuidedDecodingParams  # older vLLM

        return lambda schema: {"guided_decoding": GuidedDecodingParams(json=dict(schema))}


def _adapter_rank(adapter: Path) -> int:
    config_path = adapter / "adapter_config.json"
    try:
        config = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise BackendError(
            f"lora_path {adapter} is not a PEFT adapter folder: {config_path.name} is missing"
        ) from None
    ranks = [config.get("r", 8), *(config.get("rank_pattern") or {}).values()]
    return max(int(r) for r in ranks)


def _vllm_lora_rank(rank: int) -> int:
    for allowed in _VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise BackendError(f"LoRA rank {rank} is above vLLM's largest supported rank {_VLLM_LORA_RANKS[-1]}")
