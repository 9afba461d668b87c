"""One interface for every model call: a batch of chat requests in, results out in order.

Every backend (transformers, vllm, openai) implements `Backend.generate`. The request
cache, budget and progress live one level up, in `honing.calls.runner.run_requests`, so a
backend only has to turn requests into results and report each one as it finishes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

from honing.errors import HoningError


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # A JSON schema the reply must follow (structured output); None for free text.
    json_schema: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ChatRequest:
    """A chat request. `messages` is a tuple of {"role", "content"} dicts.

    When `continue_final_message` is set, the last message is an assistant prefix
    that the model continues (no new turn is opened), the way vLLM and transformers
    `apply_chat_template(continue_final_message=True)` do.
    `template_version` is the hash of the prompt template that rendered the
    messages; it enters the cache key so editing a template invalidates its calls.
    """

    messages: tuple[Mapping[str, str], ...]
    params: SamplingParams = field(default_factory=SamplingParams)
    continue_final_message: bool = False
    template_version: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["messages"] = [dict(m) for m in self.messages]
        d["params"]["stop"] = list(self.params.stop)
        return d

    def cache_key(self, model_id: str) -> str:
        """Content address of this request sent to `model_id` (order-free JSON)."""
        payload = {"model": model_id, **self.to_dict()}
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "stop", "length", ...


@dataclass(frozen=True)
class ChatResult:
    completions: tuple[Completion, ...]  # `n` of them
    prompt_tokens: int
    completion_tokens: int
    model: str
    cached: bool = False

    @property
    def text(self) -> str:
        return self.completions[0].text

    def to_json(self) -> str:
        d = asdict(self)
        d.pop("cached")
        return json.dumps(d, sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, blob: str, cached: bool = True) -> "ChatResult":
        d = json.loads(blob)
        d["completions"] = tuple(Completion(**c) for c in d["completions"])
        return cls(**d, cached=cached)


# Called once per finished request with (position in the batch, result), in any order.
ResultCallback = Callable[[int, ChatResult], None]


class Backend(Protocol):
    """What every backend provides.

    `model_id` names the weights exactly (a local checkpoint includes a hash of its
    files), because it is part of every cache key: retraining a checkpoint at the
    same path must not reuse the old model's answers.
    """

    kind: str
    model_id: str

    def generate(
        self, requests: Sequence[ChatRequest], on_result: ResultCallback | None = None
    ) -> list[ChatResult]:
        """Answer every request; results in request order. Calls `on_result` as each finishes."""
        ...

    def close(self) -> None: ...


class BackendError(HoningError, RuntimeError):
    """A call that cannot succeed by retrying (bad key, unknown model, bad request).

    Its message is one line meant for the user; stages print it without a traceback.
    """


def chat_prompt_ids(tokenizer: Any, requests: Sequence[ChatRequest], max_model_len: int | None,
                    start: int = 0) -> list[list[int]]:
    """Token ids of each request's chat prompt, as vLLM takes them (`start` is the
    first request's index, for messages).

    Rendered one by one (continue_final_message may differ), tokenized in one call
    without special tokens, as `apply_chat_template(tokenize=True)` and `llm.chat` do:
    the template already wrote any BOS. A prompt that fills the context is an error."""
    texts = [render_chat(tokenizer, start + k, r) for k, r in enumerate(requests)]
    prompts = tokenizer(texts, add_special_tokens=False)["input_ids"]
    for k, ids in enumerate(prompts):
        if max_model_len is not None and len(ids) >= max_model_len:
            raise BackendError(
                f"request {start + k}: the prompt is {len(ids)} tokens; the model's context "
                f"(max_model_len) is {max_model_len}, which leaves no room to generate"
            )
    return [list(ids) for ids in prompts]


def render_chat(tokenizer: Any, index: int, request: ChatRequest) -> str:
    """The request's messages through the tokenizer's chat template, as text."""
    messages = [dict(m) for m in request.messages]
    if request.continue_final_message and (not messages or messages[-1].get("role") != "assistant"):
        raise BackendError(
            f"request {index}: continue_final_message needs the last message to be an assistant "
            f"prefix; found role {messages[-1].get('role') if messages else None!r}"
        )
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=not request.continue_final_message,
        continue_final_message=request.continue_final_message,
    )
