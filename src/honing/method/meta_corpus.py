"""meta_corpus: the strong critic's feedback on the policy's answers (SELF, SRT).

For every meta prompt the base policy answers (greedy and sampled); the critic
writes feedback and a refinement for each answer. The corpus also holds the
reference solutions as answers, and, where the prompt's task family writes them,
critiques of answers with balanced noise (every step wrong with probability 0.5,
independent of carries), which the second prototype found the tiny critic needs
in order to check rather than guess.

Every row needs a refinement that is not a wrong answer: the critic's own, else
the prompt's reference solution, else the answer itself where the critic judged
it correct and the rule check does not disagree. A row with none of these is
dropped to the quarantine with its reason, as is feedback that cannot be parsed.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

from honing.artifacts.validation import quarantine_frame
from honing.calls.roles import Role
from honing.method.critique import Critic
from honing.method.generate import GenerateConfig, generate_candidates
from honing.method.prompts import PromptSet

if TYPE_CHECKING:
    from honing.tasks.base import Tasks

# Quarantine reasons start with these (the metrics count rows by them).
UNPARSEABLE = "unparseable feedback"
NO_REFINEMENT = "no refinement"


@dataclass(frozen=True)
class MetaCorpusConfig:
    num_samples: int = 2
    temperature: float = 1.0
    greedy: bool = True
    max_tokens: int = 96
    gold_answers: bool = True  # the reference solution as an answer, critiqued too
    gold_critiques: int = 300  # of those, how many critiques of gold answers to keep
    noise_critiques: int = 6000  # critiques of balanced-noise answers (families that write them)
    noise_p_wrong: float = 0.5
    seed: int = 0


def _source(sample_index: int, greedy: bool) -> str:
    return "policy_greedy" if greedy and sample_index == 0 else "policy_sampled"


def build_meta_corpus(prompts: pl.DataFrame, policy: Role, critic: Critic, templates: PromptSet,
                      cfg: MetaCorpusConfig, *, tasks: Tasks) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The corpus, and the rows dropped with their reasons (quarantine): feedback that
    could not be parsed, and rows left without a refinement. `tasks` are the prompts'
    task families (their rule check and balanced-noise answers)."""
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
    rows += _noise_rows(with_reference, tasks, cfg, rng)
    judged = critic.critique([r["prompt"] for r in rows], [r["response"] for r in rows])
    by_id = {p["id"]: p for p in prompts.iter_rows(named=True)}
    out, quarantined = [], []

    def drop(r: dict, text: str, column: str, reason: str) -> None:
        quarantined.append({"source_file": f"critic:{critic.name}", "row_id": r["id"], "column": column,
                            "reason": reason, "row": json.dumps({**r, "feedback": text}, ensure_ascii=False)})

    for r, (text, fb) in zip(rows, judged, strict=True):
        if fb.verdict == "unparsed":  # a critic reply we cannot read is not training data
            drop(r, text, "feedback", f"{UNPARSEABLE}: {fb.parse_error}")
            continue
        prompt = by_id[r["prompt_id"]]
        refinement = fb.refinement or prompt["reference"]
        if not refinement and fb.verdict == "correct" and tasks.verify(r["response"], prompt) is not False:
            refinement = r["response"]  # judged right, nothing to refine
        if not refinement:  # never a wrong answer as its own refinement
            checked = {True: "right", False: "wrong", None: "unchecked"}[tasks.verify(r["response"], prompt)]
            drop(r, text, "refinement", f"{NO_REFINEMENT}: the critic wrote none, the prompt has no reference "
                                        f"solution, and the answer is judged {fb.verdict} (rule check: {checked})")
            continue
        out.append({**r, "feedback": text, "verdict": fb.verdict, "score": fb.score,
                    "weaknesses": fb.weaknesses or "", "suggestions": fb.suggestions or "",
                    "refinement": refinement, "critic": critic.name, "policy": policy.model_id,
                    "iteration": "meta"})
    corpus = pl.DataFrame(out, schema={
        "id": pl.String, "prompt_id": pl.String, "prompt": pl.String, "response": pl.String,
        "response_source": pl.String, "feedback": pl.String, "verdict": pl.String, "score": pl.Int64,
        "weaknesses": pl.String, "suggestions": pl.String, "refinement": pl.String,
        "critic": pl.String, "policy": pl.String, "iteration": pl.String,
    })
    return corpus, quarantine_frame(quarantined)


def _noise_rows(with_reference: pl.DataFrame, tasks: Tasks, cfg: MetaCorpusConfig,
                rng: random.Random) -> list[dict]:
    """`noise_critiques` balanced-noise answers, round-robin over the prompts whose
    family writes them (an error when none of the prompts' families does)."""
    if not cfg.noise_critiques or not with_reference.height:
        return []
    refs = [(r, write) for r in with_reference.iter_rows(named=True) if (write := tasks.noisy_answer(r))]
    if not refs:
        raise ValueError(f"meta_corpus.noise_critiques is {cfg.noise_critiques}, but no task family of these "
                         f"prompts writes balanced-noise answers ({', '.join(sorted(tasks.families))}); set it to 0")
    rows = []
    for k in range(cfg.noise_critiques):
        r, write = refs[k % len(refs)]
        rows.append({"id": f"{r['id']}:noise{k // len(refs)}", "prompt_id": r["id"], "prompt": r["prompt"],
                     "response": write(rng, cfg.noise_p_wrong), "response_source": "noise"})
    return rows
