"""refine: R rounds of self-refinement, stopping early once the critic says "correct".

Round 0 is the answer and its feedback. In each round every answer still judged
incorrect is refined, then critiqued again. Three ways to refine (`mode`):

- "continue" (the micro world, after the second prototype): the flagged step's
  recomputed value is put in place of the claimed one and the policy continues
  the solution from there. Accepted only if the feedback quoted that step's
  operands exactly as the answer wrote them; a false alarm then costs little,
  since greedy continuation reproduces the rest of the answer.
- "rewrite" (SELF/SRT with real models): the policy writes a new answer from the
  refine template (answer + feedback).
- "critic": take the critic's own refinement (SRT's strong critic writes one).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from honing.calls.backends import ChatRequest, SamplingParams
from honing.calls.roles import Role
from honing.method.critique import Critic
from honing.method.feedback import ParsedFeedback, parse_feedback
from honing.method.prompts import PromptSet, assistant, user
from honing.micro.world import format_step, parse_solution

MODES = ("continue", "rewrite", "critic")


@dataclass(frozen=True)
class RefineConfig:
    rounds: int = 1
    mode: str = "continue"
    max_tokens: int = 96
    feedback_format: str = "check"


def corrected_prefix(response: str, fb: ParsedFeedback) -> str | None:
    """The answer up to its first wrong step, with the recomputed value in place.

    None when the feedback does not apply to this answer (no flagged step, or the
    operands it quotes are not the ones the answer wrote).
    """
    if fb.verdict != "incorrect" or fb.wrong_step is None or fb.recomputed is None:
        return None
    steps = parse_solution(response).steps
    k = fb.wrong_step
    kept = [format_step(i + 1, *s) for i, s in enumerate(steps[: k - 1])]
    if fb.quoted is None:  # the final answer line is wrong; every step was right
        if len(steps) != k - 1:
            return None
        return " ; ".join([*kept, f"Answer : {fb.recomputed}"])
    if len(steps) < k or steps[k - 1][:3] != fb.quoted:
        return None
    return " ; ".join([*kept, format_step(k, *fb.quoted, fb.recomputed)])


def _refine_requests(rows: list[dict], cfg: RefineConfig, templates: PromptSet):
    """Requests for the rows that can be refined (rows the feedback does not apply to
    get none and stop refining; a fixed answer line needs no model call)."""
    params = SamplingParams(temperature=0.0, max_tokens=cfg.max_tokens)
    requests, targets, prefixes = [], [], []
    for i, row in enumerate(rows):
        if cfg.mode == "continue":
            fb = parse_feedback(row["feedback"], cfg.feedback_format)
            prefix = corrected_prefix(row["response"], fb)
            if prefix is None:  # the feedback does not point at a step of this answer
                continue
            if fb.quoted is None:  # the answer line was fixed: nothing left to continue
                row["_refined"] = prefix
                continue
            messages = (user(templates.answer(row["prompt"])), assistant(prefix))
            requests.append(ChatRequest(messages, params, continue_final_message=True,
                                        template_version=templates.version("answer")))
            prefixes.append(prefix)
        else:  # rewrite
            messages = (user(templates.refine(row["prompt"], row["response"], row["feedback"])),)
            requests.append(ChatRequest(messages, params, template_version=templates.version("refine")))
            prefixes.append("")
        targets.append(i)
    return requests, targets, prefixes


def refine_rounds(
    feedback: pl.DataFrame, policy: Role | None, critic: Critic, templates: PromptSet,
    cfg: RefineConfig, iteration: str,
) -> pl.DataFrame:
    """All rounds of every candidate (schema `Refinements`), round 0 included.

    `feedback` holds the answers and their round-0 feedback (`Feedback` columns
    plus `prompt`).
    """
    if cfg.mode not in MODES:
        raise ValueError(f"refine.mode must be one of {', '.join(MODES)}, found {cfg.mode!r}")
    model = policy.model_id if policy is not None else critic.name
    current = [
        {**row, "candidate_id": row["id"], "round": 0, "model": row.get("model", model)}
        for row in feedback.iter_rows(named=True)
    ]
    out = list(current)
    active = [r for r in current if r["verdict"] == "incorrect"]
    for rnd in range(1, cfg.rounds + 1):
        if not active:
            break
        if cfg.mode == "critic":
            refined = [_critic_refinement(r, cfg) for r in active]
        else:
            requests, targets, prefixes = _refine_requests(active, cfg, templates)
            refined = [r.pop("_refined", None) for r in active]
            results = policy.call(requests, f"refine round {rnd}") if requests else []
            for i, prefix, res in zip(targets, prefixes, results):
                refined[i] = f"{prefix} {res.text.strip()}".strip() if prefix else res.text.strip()
        todo = [(r, text) for r, text in zip(active, refined) if text is not None]
        if not todo:
            break
        judged = critic.critique([r["prompt"] for r, _ in todo], [t for _, t in todo])
        active = []
        for (prev, text), (fb_text, fb) in zip(todo, judged):
            row = {**prev, "round": rnd, "response": text, "feedback": fb_text, "verdict": fb.verdict,
                   "score": fb.score, "model": model}
            out.append(row)
            if fb.verdict == "incorrect":
                active.append(row)
    return _frame(out, iteration)


def _critic_refinement(row: dict, cfg: RefineConfig) -> str | None:
    return parse_feedback(row["feedback"], cfg.feedback_format).refinement


def _frame(rows: list[dict], iteration: str) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": [f"{r['candidate_id']}@{r['round']}" for r in rows],
            "candidate_id": [r["candidate_id"] for r in rows],
            "prompt_id": [r["prompt_id"] for r in rows],
            "prompt": [r["prompt"] for r in rows],
            "round": pl.Series([r["round"] for r in rows], dtype=pl.Int64),
            "response": [r["response"] for r in rows],
            "feedback": [r["feedback"] for r in rows],
            "verdict": [r["verdict"] for r in rows],
            "score": pl.Series([r["score"] for r in rows], dtype=pl.Int64),
            "model": [r["model"] for r in rows],
            "iteration": [iteration] * len(rows),
        }
    ).sort(["candidate_id", "round"], maintain_order=True)
