"""generate: k answers per prompt from the current policy (parallel sampling).

Each prompt gets one request with n = `num_samples` at `temperature`, plus (if
`greedy`) one greedy answer. Seeds are derived from the prompt id, not its
position, so growing or reordering the pool leaves every other request (and its
cache key) unchanged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import polars as pl

from honing.calls.backends import ChatRequest, SamplingParams
from honing.calls.roles import Role
from honing.method.prompts import PromptSet, user


@dataclass(frozen=True)
class GenerateConfig:
    num_samples: int = 4  # sampled answers per prompt
    temperature: float = 1.0
    top_p: float = 1.0
    greedy: bool = True  # one greedy answer too (sample_index 0)
    max_tokens: int = 96
    num_prompts: int = 0  # a seeded subset of the pool; 0 = all of it
    seed: int = 0


def request_seed(seed: int, prompt_id: str) -> int:
    return int(hashlib.sha256(f"{seed}:{prompt_id}".encode()).hexdigest()[:8], 16)


def select_prompts(prompts: pl.DataFrame, num_prompts: int, seed: int) -> pl.DataFrame:
    """A seeded subset chosen by id hash: stable when the pool grows or is reordered."""
    if not num_prompts or num_prompts >= prompts.height:
        return prompts
    order = [request_seed(seed, i) for i in prompts["id"].to_list()]
    return prompts.with_columns(_order=pl.Series(order)).sort("_order").head(num_prompts).drop("_order")


def answer_requests(prompts: list[str], templates: PromptSet, params: SamplingParams,
                    seeds: list[int | None] | None = None) -> list[ChatRequest]:
    from dataclasses import replace

    version = templates.version("answer")
    seeds = seeds or [params.seed] * len(prompts)
    return [
        ChatRequest((user(templates.answer(p)),), replace(params, seed=s), template_version=version)
        for p, s in zip(prompts, seeds, strict=True)
    ]


def generate_candidates(
    prompts: pl.DataFrame, policy: Role, templates: PromptSet, cfg: GenerateConfig, iteration: str
) -> pl.DataFrame:
    """One row per answer (schema `Candidates`), ordered by prompt then sample index."""
    prompts = select_prompts(prompts, cfg.num_prompts, cfg.seed)
    texts, ids = prompts["prompt"].to_list(), prompts["id"].to_list()
    per_prompt: list[list[tuple[str, str]]] = [[] for _ in ids]
    if cfg.greedy:
        greedy = SamplingParams(temperature=0.0, max_tokens=cfg.max_tokens)
        for i, res in enumerate(policy.call(answer_requests(texts, templates, greedy), "greedy answers")):
            per_prompt[i].append((res.text, res.completions[0].finish_reason))
    if cfg.num_samples:
        sampled = SamplingParams(n=cfg.num_samples, temperature=cfg.temperature, top_p=cfg.top_p,
                                 max_tokens=cfg.max_tokens)
        seeds = [request_seed(cfg.seed, i) for i in ids]
        results = policy.call(answer_requests(texts, templates, sampled, seeds), "sampled answers")
        for i, res in enumerate(results):
            per_prompt[i].extend((c.text, c.finish_reason) for c in res.completions)
    rows = [
        {"id": f"{pid}:{k}", "prompt_id": pid, "prompt": text, "sample_index": k,
         "response": resp.strip(), "finish_reason": finish,
         "model": policy.model_id, "iteration": iteration}
        for pid, text, answers in zip(ids, texts, per_prompt, strict=True)
        for k, (resp, finish) in enumerate(answers)
    ]
    return pl.DataFrame(rows, schema={"id": pl.String, "prompt_id": pl.String, "prompt": pl.String,
                                      "sample_index": pl.Int64, "response": pl.String,
                                      "finish_reason": pl.String, "model": pl.String,
                                      "iteration": pl.String})
