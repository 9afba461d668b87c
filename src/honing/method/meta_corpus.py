"""meta_corpus: the strong critic's feedback on the policy's answers (SELF, SRT).

For every meta prompt the base policy answers (greedy and sampled); the critic
writes feedback and a refinement for each answer. For the micro world the
corpus also holds the gold solutions and critiques of gold answers and of
answers with balanced noise (every step wrong with probability 0.5, independent
of carries), which the second prototype found the tiny critic needs in order to
check rather than guess.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import polars as pl

from honing.artifacts.validation import quarantine_frame
from honing.calls.roles import Role
from honing.method.critique import Critic
from honing.method.generate import GenerateConfig, generate_candidates
from honing.method.prompts import PromptSet
from honing.micro import world


@dataclass(frozen=True)
class MetaCorpusConfig:
    num_samples: int = 2
    temperature: float = 1.0
    greedy: bool = True
    max_tokens: int = 96
    gold_answers: bool = True  # the reference solution as an answer, critiqued too
    gold_critiques: int = 300  # of those, how many critiques of gold answers to keep
    noise_critiques: int = 6000  # micro world: critiques of balanced-noise answers
    noise_p_wrong: float = 0.5
    seed: int = 0


def _source(sample_index: int, greedy: bool) -> str:
    return "policy_greedy" if greedy and sample_index == 0 else "policy_sampled"


def build_meta_corpus(prompts: pl.DataFrame, policy: Role, critic: Critic, templates: PromptSet,
                      cfg: MetaCorpusConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The corpus, and the rows whose feedback could not be parsed (quarantine)."""
    gen = GenerateConfig(num_samples=cfg.num_samples, temperature=cfg.temperature, greedy=cfg.greedy,
                         max_tokens=cfg.max_tokens, seed=cfg.seed)
    cands = generate_candidates(prompts, policy, templates, gen, "meta")
    rows = [
        {"id": r["id"], "prompt_id": r["prompt_id"], "prompt": r["prompt"], "response": r["response"],
         "response_source": _source(r["sample_index"], cfg.greedy)}
        for r in cands.iter_rows(named=True)
    ]
    rng = random.Random(cfg.seed)
    with_reference = prompts.filter(pl.col("reference").is_not_null())
    if cfg.gold_answers:
        for k, r in enumerate(with_reference.iter_rows(named=True)):
            if k < cfg.gold_critiques:
                rows.append({"id": f"{r['id']}:gold", "prompt_id": r["id"], "prompt": r["prompt"],
                             "response": r["reference"], "response_source": "gold"})
    if cfg.noise_critiques and with_reference.height:
        refs = with_reference.to_dicts()
        for k in range(cfg.noise_critiques):
            r = refs[k % len(refs)]
            problem = world.parse_problem(r["prompt"])
            rows.append({"id": f"{r['id']}:noise{k // len(refs)}", "prompt_id": r["id"], "prompt": r["prompt"],
                         "response": world.balanced_noisy_solution(problem, rng, cfg.noise_p_wrong),
                         "response_source": "noise"})
    judged = critic.critique([r["prompt"] for r in rows], [r["response"] for r in rows])
    references = dict(zip(with_reference["id"].to_list(), with_reference["reference"].to_list()))
    out, quarantined = [], []
    for r, (text, fb) in zip(rows, judged):
        if fb.verdict == "unparsed":  # a critic reply we cannot read is not training data
            quarantined.append({"source_file": f"critic:{critic.name}", "row_id": r["id"], "column": "feedback",
                                "reason": f"unparseable feedback: {fb.parse_error}",
                                "row": json.dumps({**r, "feedback": text}, ensure_ascii=False)})
            continue
        out.append({**r, "feedback": text, "verdict": fb.verdict, "score": fb.score,
                    "weaknesses": fb.weaknesses or "", "suggestions": fb.suggestions or "",
                    "refinement": fb.refinement or references.get(r["prompt_id"]) or r["response"],
                    "critic": critic.name, "policy": policy.model_id, "iteration": "meta"})
    corpus = pl.DataFrame(out, schema={
        "id": pl.String, "prompt_id": pl.String, "prompt": pl.String, "response": pl.String,
        "response_source": pl.String, "feedback": pl.String, "verdict": pl.String, "score": pl.Int64,
        "weaknesses": pl.String, "suggestions": pl.String, "refinement": pl.String,
        "critic": pl.String, "policy": pl.String, "iteration": pl.String,
    })
    return corpus, quarantine_frame(quarantined)
