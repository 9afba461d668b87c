"""Local generation with transformers: batched `model.generate` over left-padded prompts.

Requests are grouped by identical sampling params (one `generate` call serves one set
of params), sorted by prompt length inside a group so a batch holds prompts of similar
length (less padding), and cut into batches of `batch_size` generated sequences.
Each finished batch is reported through `on_result` before the next one starts, so
the request cache upstream keeps what was done if a long run is interrupted.

transformers 5's continuous batching (`generate_batch`) is not used: it could not be
checked on a GPU here, and on CPU it took 16-23 s where `generate` takes 0.1 s
(64 prompts x 16 tokens, tiny model).

`model_identity` also serves the vllm backend: both name a local checkpoint by a hash
of its files, because that name enters every cache key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from honing.calls.backends.base import (
    BackendError,
    ChatRequest,
    ChatResult,
    Completion,
    ResultCallback,
    SamplingParams,
)

log = logging.getLogger(__name__)

# Files that decide what a local checkpoint answers: weights (full or LoRA adapter),
# architecture, and the tokenizer with its chat template. Trainer leftovers
# (optimizer.pt, training_args.bin, ...) are left out: they do not change outputs.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
_NOT_WEIGHTS = {"training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth", "scaler.pt"}
_DEFINING_FILES = (
    "config.json",
    "adapter_config.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "chat_template.jinja",
    "chat_template.json",
)


def weights_digest(folder: Path, length: int = 12) -> str:
    """Short sha256 over the weight, config and tokenizer files of a checkpoint folder."""
    names = sorted(
        p.name
        for p in folder.iterdir()
        if p.is_file()
        and (p.name in _DEFINING_FILES or (p.suffix in _WEIGHT_SUFFIXES and p.name not in _NOT_WEIGHTS))
    )
    if not any(Path(n).suffix in _WEIGHT_SUFFIXES for n in names):
        raise BackendError(
            f"model folder {folder} holds no weight files "
            f"(expected *.safetensors or *.bin; found {sorted(p.name for p in folder.iterdir())})"
        )
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0")
        with open(folder / name, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()[:length]


def model_identity(model: str, revision: str | None = None) -> str:
    """The name of the weights that enters cache keys.

    A local folder is `path@<hash of its files>`, so retraining at the same path gives
    a new name. A Hub model is `name@<commit>` when the commit can be read from the
    local Hub cache (offline), else `name@<revision>` or the bare name.
    """
    if Path(model).is_dir():
        return f"{os.path.normpath(model)}@{weights_digest(Path(model))}"
    commit = _hub_commit(model, revision)
    if commit:
        return f"{model}@{commit}"
    return f"{model}@{revision}" if revision else model


def _hub_commit(model: str, revision: str | None) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "config.json", revision=revision)
    except Exception:  # not a valid repo id, no hub client: fall back to the name
        return None
    if isinstance(cached, str):
        # .../models--org--name/snapshots/<commit>/config.json
        return Path(cached).parent.name
    return None


def sampling_group_key(params: SamplingParams) -> str:
    """Requests with equal keys can share one `generate` call. The seed is left out:
    a batch is seeded from all its requests' seeds together."""
    fields = asdict(params)
    fields.pop("seed")
    return json.dumps(fields, sort_keys=True, default=list)


def batch_seed(seeds: Sequence[int | None]) -> int | None:
    """One torch seed for a batch, derived from its requests' seeds (None if none given)."""
    if all(s is None for s in seeds):
        return None
    blob = json.dumps(list(seeds)).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") & ((1 << 63) - 1)


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Text before the earliest stop string (the stop string itself is dropped, as vLLM
    and OpenAI do), and whether one was found."""
    positions = [p for p in (text.find(s) for s in stop if s) if p >= 0]
    if not positions:
        return text, False
    return text[: min(positions)], True


class TransformersBackend:
    """Batched local generation with `model.generate`, on CPU or GPU.

    `batch_size` counts generated sequences: a batch holds `batch_size // n` prompts
    when each asks for `n` samples, so memory stays bounded whatever `n` is.
    `dtype="auto"` keeps the checkpoint's dtype on GPU and uses float32 on CPU, where
    half precision is slow. Structured output (`json_schema`) is not enforced here:
    the reply is free text and the caller's parser decides.
    """

    kind = "transformers"

    def __init__(
        self,
        model: str,
        batch_size: int = 64,
        device: str = "auto",
        dtype: str = "auto",
        revision: str | None = None,
        **ignored: Any,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        if batch_size < 1:
            raise BackendError(f"transformers backend: batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.device = _resolve_device(device)
        torch_dtype = _resolve_dtype(dtype, self.device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model, revision=revision)
            self.model = AutoModelForCausalLM.from_pretrained(
                model, revision=revision, dtype=torch_dtype, device_map=self.device
            )
        except (OSError, ValueError) as e:  # ValueError: not even a valid Hub repo id
            where = (
                f"the folder {Path(model).resolve()}"
                if Path(model).exists()
                else f"the Hub (no folder {Path(model).resolve()} either)"
            )
            reason = " ".join(str(e).split())  # BackendError messages are one line
            raise BackendError(f"cannot load model {model!r} from {where}: {reason}") from e
        self.model.eval()
        if self.tokenizer.chat_template is None:
            raise BackendError(
                f"model {model!r} has no chat template (tokenizer_config.json / chat_template.jinja); "
                "honing sends chat requests only"
            )
        self.tokenizer.padding_side = "left"
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [eos])
        pad = self.tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else min(self._eos_ids)
        # A neutral generation config: the request's params are the whole truth. The
        # checkpoint's defaults (do_sample, top_k=50, temperature 0.6, ...) would
        # otherwise be merged into every call.
        self.model.generation_config = GenerationConfig(
            eos_token_id=sorted(self._eos_ids), pad_token_id=self._pad_id, use_cache=True
        )
        self.model_id = model_identity(model, revision)
        self._warned_json_schema = False

    # -- public interface -------------------------------------------------------------

    def generate(
        self, requests: Sequence[ChatRequest], on_result: ResultCallback | None = None
    ) -> list[ChatResult]:
        prompts = [self._prompt_ids(i, r) for i, r in enumerate(requests)]
        results: list[ChatResult | None] = [None] * len(requests)
        for batch in self._plan_batches(requests, prompts):
            outputs = self._generate_batch([requests[i] for i in batch], [prompts[i] for i in batch])
            for i, result in zip(batch, outputs):
                results[i] = result
                if on_result is not None:
                    on_result(i, result)
        return results  # type: ignore[return-value]  # every slot is filled above

    def close(self) -> None:
        import gc

        import torch

        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- steps ------------------------------------------------------------------------

    def _prompt_ids(self, index: int, request: ChatRequest) -> list[int]:
        messages = [dict(m) for m in request.messages]
        if request.continue_final_message and (not messages or messages[-1].get("role") != "assistant"):
            raise BackendError(
                f"request {index}: continue_final_message needs the last message to be an assistant "
                f"prefix; found role {messages[-1].get('role') if messages else None!r}"
            )
        encoded = self.tokenizer.apply_chat_template(
            messages,
            tokenize=True,
            add_generation_prompt=not request.continue_final_message,
            continue_final_message=request.continue_final_message,
        )
        # transformers 5 returns a BatchEncoding; older versions a plain list.
        return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)

    def _plan_batches(self, requests: Sequence[ChatRequest], prompts: list[list[int]]) -> list[list[int]]:
        """Request indices per batch: same params, similar lengths, at most batch_size rows."""
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(sampling_group_key(r.params), []).append(i)
        batches = []
        for indices in groups.values():
            per_batch = max(1, self.batch_size // rows_per_prompt(requests[indices[0]].params))
            # Longest first: if memory runs out, it does so in the first batch, not the last.
            indices = sorted(indices, key=lambda i: -len(prompts[i]))
            batches += [indices[k : k + per_batch] for k in range(0, len(indices), per_batch)]
        return batches

    def _generate_batch(self, requests: list[ChatRequest], prompts: list[list[int]]) -> list[ChatResult]:
        import torch

        params = requests[0].params
        if params.json_schema is not None and not self._warned_json_schema:
            log.warning("transformers backend: json_schema is not enforced; replies are free text")
            self._warned_json_schema = True

        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[self._pad_id] * (width - len(p)) + p for p in prompts], device=self.device)
        attention_mask = torch.tensor(
            [[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device
        )
        seed = batch_seed([r.params.seed for r in requests])
        if seed is not None:
            torch.manual_seed(seed)  # seeds every device; generate samples from the global RNG
        rows = rows_per_prompt(params)
        stopping = [_StopStringCriteria(self.tokenizer, prompts, rows, params.stop)] if params.stop else None
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                stopping_criteria=stopping,
                **_generate_kwargs(params),
            )
        generated = output[:, width:].tolist()  # rows: prompt 0 sample 0..n-1, prompt 1 ...
        return [
            # Greedy with n > 1 generated one row per prompt: its n answers are that row n times.
            self._result(prompt, generated[k * rows : (k + 1) * rows] * (params.n // rows), params.stop)
            for k, prompt in enumerate(prompts)
        ]

    def _result(self, prompt: list[int], samples: list[list[int]], stop: Sequence[str]) -> ChatResult:
        completions, completion_tokens = [], 0
        for tokens in samples:
            ended_at = next((j for j, t in enumerate(tokens) if t in self._eos_ids), None)
            if ended_at is not None:
                tokens = tokens[: ended_at + 1]  # the EOS counts as a generated token, as in vLLM
            continuation = ContinuationText(self.tokenizer, prompt, stop)
            for token in tokens:
                if continuation.add(token):
                    break
            # Rows that stop on a string are padded afterwards: count only up to the stop.
            completion_tokens += continuation.tokens
            finished = continuation.stopped or ended_at is not None
            completions.append(Completion(text=continuation.text, finish_reason="stop" if finished else "length"))
        return ChatResult(
            completions=tuple(completions),
            prompt_tokens=len(prompt),
            completion_tokens=completion_tokens,
            model=self.model_id,
        )


class ContinuationText:
    """The text a completion adds after its prompt, decoded token by token, cut at the
    first stop string.

    Decoding with the prompt as context (tokenizers' `DecodeStream`, as vLLM does)
    keeps the space or word joint between the prompt and the first generated token,
    so `assistant prefix + text` reads right with `continue_final_message`, and both
    local backends return the same text for the same tokens.
    """

    def __init__(self, tokenizer: Any, prompt: list[int], stop: Sequence[str]) -> None:
        self.stop = tuple(s for s in stop if s)
        self.longest_stop = max((len(s) for s in self.stop), default=0)
        self.text, self.tokens, self.stopped = "", 0, False
        self._backend = getattr(tokenizer, "backend_tokenizer", None)
        if self._backend is not None:
            from tokenizers.decoders import DecodeStream

            self._stream = DecodeStream(ids=prompt, skip_special_tokens=True)
        else:  # a slow (Python) tokenizer: decode the generated tokens alone
            self._tokenizer, self._ids = tokenizer, []

    def add(self, token: int) -> bool:
        """Append one generated token; True once a stop string has appeared."""
        if self.stopped:
            return True
        self.tokens += 1
        if self._backend is not None:
            chunk = self._stream.step(self._backend, token) or ""
            searched_from = max(0, len(self.text) - self.longest_stop + 1)
            self.text += chunk
        else:
            self._ids.append(token)
            searched_from = 0
            self.text = self._tokenizer.decode(self._ids, skip_special_tokens=True)
        if self.stop and len(self.text) > searched_from:
            cut, found = cut_at_stop(self.text[searched_from:], self.stop)
            if found:
                self.text, self.stopped = self.text[:searched_from] + cut, True
        return self.stopped


def rows_per_prompt(params: SamplingParams) -> int:
    """Sequences generated per prompt: n when sampling; one when greedy, since n greedy
    answers are equal (and generate refuses num_return_sequences > 1 without sampling)."""
    return params.n if params.temperature > 0 else 1


def _generate_kwargs(params: SamplingParams) -> dict[str, Any]:
    common = {"max_new_tokens": params.max_tokens, "num_return_sequences": rows_per_prompt(params), "use_cache": True}
    if params.temperature <= 0:
        return {**common, "do_sample": False}
    # top_k=0 disables top-k, as in vLLM and OpenAI (transformers' own default is 50).
    return {**common, "do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0}


class _StopStringCriteria:
    """Ends a row of `generate` once its text holds a stop string.

    transformers' own `stop_strings` needs a BPE-like vocabulary (it fails on
    WordPiece), so each row keeps a `ContinuationText` fed one token per step. It only
    saves compute: the final text is decoded again in `_result` the same way.
    Rows are each prompt repeated `rows` times (num_return_sequences), in that order.
    """

    def __init__(self, tokenizer: Any, prompts: list[list[int]], rows: int, stop: Sequence[str]) -> None:
        self.rows = [ContinuationText(tokenizer, p, stop) for p in prompts for _ in range(rows)]

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        last = input_ids[:, -1].tolist()
        return torch.tensor([row.add(t) for row, t in zip(self.rows, last)], device=input_ids.device)


def _resolve_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _resolve_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":
        return torch.float32 if device == "cpu" else "auto"
    try:
        return getattr(torch, dtype) if isinstance(dtype, str) else dtype
    except AttributeError:
        raise BackendError(
            f"transformers backend: unknown dtype {dtype!r} (expected auto, float32, bfloat16 or float16)"
        ) from None
