"""reward: a reward model scores (prompt, answer), for the filter and for pairs (EVOLVE).

A reward model is a transformers sequence-classification model with one output,
the kind TRL's RewardTrainer trains (`AutoModelForSequenceClassification`,
num_labels=1): a local folder or a Hub id. An answer's reward is the model's
output for the conversation [user: the prompt as the policy saw it (the preset's
answer template), assistant: the answer], tokenized exactly as RewardTrainer
tokenizes its conversational pairs (the chat template; right padding), so a model
trained on the pairs artifact scores answers the way it learned to.

Scores are cached in the request cache (`honing.calls.cache`) by the model's
identity (its path and a hash of its files, or a Hub commit) and the full token
input: a rerun, or another stage scoring the same answer, computes nothing.
Inputs longer than `max_length` keep their last `max_length` tokens (the score
is read at the last token) and are counted in the metrics.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from honing.calls.backends.base import ChatResult, Completion
from honing.calls.backends.transformers_backend import model_identity
from honing.calls.cache import RequestCache
from honing.method.prompts import PromptSet, assistant, user

Messages = Sequence[Mapping[str, str]]


@dataclass(frozen=True)
class RewardModelConfig:
    model: str  # a local folder or a Hub id
    min_reward: float | None = None  # the filter's threshold (None: score only); build_pairs ignores it
    batch_size: int = 32
    max_length: int | None = None  # None: the model's max_position_embeddings
    device: str = "auto"  # auto: cuda when available, else cpu
    cache: bool = True

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, found {self.batch_size!r}")


class RewardModel:
    """A reward model with batching and the request cache; `score` is its one call.
    `cache`: None opens the default request cache (unless `cfg.cache` is off)."""

    def __init__(self, cfg: RewardModelConfig, cache: RequestCache | None = None):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.cfg, self._torch = cfg, torch
        self.stats = {"scored": 0, "tokens": 0, "truncated": 0}
        self.runtime_stats = {"cache_hits": 0, "cache_misses": 0, "seconds": 0.0}
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if self.cfg.device == "auto" \
            else self.cfg.device
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.cfg.model)
            self.model = AutoModelForSequenceClassification.from_pretrained(self.cfg.model).to(self.device)
        except (OSError, ValueError) as e:
            raise ValueError(f"reward model {self.cfg.model!r}: cannot load it as a sequence-classification "
                             f"model: {' '.join(str(e).split())}") from e
        if self.model.config.num_labels != 1:
            raise ValueError(f"reward model {self.cfg.model!r} has {self.model.config.num_labels} outputs; "
                             "a reward model has one (num_labels=1)")
        if self.tokenizer.chat_template is None:
            raise ValueError(f"reward model {self.cfg.model!r} has no chat template; it scores conversations")
        self.model.eval()
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.tokenizer.eos_token_id  # as RewardTrainer pads
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.pad_id  # the model finds each row's last token by it
        self.max_length = self.cfg.max_length or getattr(self.model.config, "max_position_embeddings", None)
        self.model_id = model_identity(self.cfg.model)
        self.cache = (cache or RequestCache()) if cfg.cache else None

    def tokenize(self, conversation: Messages) -> list[int]:
        ids = self.tokenizer.apply_chat_template([dict(m) for m in conversation], tokenize=True, return_dict=True)
        return list(ids["input_ids"])

    def key(self, ids: Sequence[int]) -> str:
        blob = json.dumps({"reward_model": self.model_id, "input_ids": list(ids)}, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def score(self, conversations: Sequence[Messages]) -> list[float]:
        """One reward per conversation, in order."""
        started = time.monotonic()
        inputs = [self.tokenize(c) for c in conversations]
        if self.max_length:
            self.stats["truncated"] += sum(len(ids) > self.max_length for ids in inputs)
            inputs = [ids[-self.max_length:] for ids in inputs]
        keys = [self.key(ids) for ids in inputs]
        found = {k: float(r.text) for k, r in (self.cache.get_many(keys) if self.cache else {}).items()}
        todo = [k for k in dict.fromkeys(keys) if k not in found]  # each distinct input once
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        self.runtime_stats["cache_hits"] += sum(k in found for k in keys)
        self.runtime_stats["cache_misses"] += len(todo)
        # similar lengths share a batch (less padding); longest first, so memory runs out at once if it does
        todo.sort(key=lambda k: (-len(inputs[first[k]]), first[k]))
        for start in range(0, len(todo), self.cfg.batch_size):
            batch = todo[start:start + self.cfg.batch_size]
            for k, value in zip(batch, self._forward([inputs[first[k]] for k in batch]), strict=True):
                found[k] = value
                if self.cache is not None:
                    self.cache.put(k, _as_result(value, len(inputs[first[k]]), self.model_id), self.model_id)
        self.stats["scored"] += len(keys)
        self.stats["tokens"] += sum(len(ids) for ids in inputs)
        self.runtime_stats["seconds"] += time.monotonic() - started
        return [found[k] for k in keys]

    def _forward(self, batch: list[list[int]]) -> list[float]:
        torch = self._torch
        width = max(len(ids) for ids in batch)
        input_ids = torch.tensor([ids + [self.pad_id] * (width - len(ids)) for ids in batch], device=self.device)
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in batch], device=self.device)
        with torch.inference_mode():
            logits = self.model(input_ids=input_ids, attention_mask=mask).logits
        return [float(v) for v in logits[:, 0].float().cpu().tolist()]

    def metrics(self) -> dict[str, Any]:
        """What the data determines: answers scored, tokens read, inputs cut to max_length."""
        return {k: int(v) for k, v in self.stats.items()}

    def runtime(self) -> dict[str, Any]:
        return {k: (round(v, 3) if k == "seconds" else int(v)) for k, v in self.runtime_stats.items()}


def _as_result(value: float, tokens: int, model_id: str) -> ChatResult:
    # The request cache stores chat results; a score is one "completion" holding the
    # float's exact text (repr round-trips), with the input's length as its prompt tokens.
    return ChatResult(completions=(Completion(text=repr(value), finish_reason="reward"),),
                      prompt_tokens=tokens, completion_tokens=0, model=model_id)


def conversation(templates: PromptSet, prompt: str, response: str) -> list[dict[str, str]]:
    """What the reward model reads: the prompt as the policy saw it, then the answer (the
    pairs artifact's prompt + chosen / rejected)."""
    return [user(templates.answer(prompt)), assistant(response)]


def reward_values(rows: pl.DataFrame, templates: PromptSet, model: RewardModel) -> dict[str, float]:
    """Row id -> the reward of that row's response to its prompt (`rows`: id, prompt, response)."""
    scores = model.score([conversation(templates, p, r)
                          for p, r in zip(rows["prompt"].to_list(), rows["response"].to_list(), strict=True)])
    return dict(zip(rows["id"].to_list(), scores, strict=True))
