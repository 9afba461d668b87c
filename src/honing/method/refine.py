"""refine: rounds of self-refinement, and EVOLVE's generation strategies.

Round 0 is each answer (the generate stage's k samples and greedy answer) with its
feedback, parsed once by the critique stage. Which answers a round refines is the
`strategy`, named as in EVOLVE:

- "parallel" (parallel sampling): no refinement; the answers and their feedback
  are the data (`rounds` is not read).
- "self_refine" (self-refinement, as SELF refines online): round r refines round
  r-1's answer only while the critic judges it "incorrect"; a "correct" or
  unparsed verdict ends it. The default.
- "chain" (EVOLVE's chain of self-refinement): round r refines round r-1's answer
  whatever the verdict, for all `rounds`, and every round is recorded (with its
  feedback) as data. Stop rule: a chain ends early when a round cannot refine its
  answer (continue mode: the feedback flags no step the answer wrote; critic mode:
  the critic wrote no refinement) or gives the same answer back, a fixed point
  that greedy refinement would only repeat.

How a round refines an answer (`mode`):

- "continue" (the micro world, after the second prototype): the flagged step's
  recomputed value is put in place of the claimed one and the policy continues
  the solution from there. The task family's `splice` does the cutting (it
  accepts only feedback that quoted that step's operands as the answer wrote
  them); a false alarm then costs little, since greedy continuation reproduces
  the rest of the answer.
- "rewrite" (SELF/SRT with real models): the policy writes a new answer from the
  refine template (answer + feedback).
- "critic": take the critic's own refinement (SRT's strong critic writes one).

Which modes a prompt preset supports is declared in its preset.yaml
(`honing.method.feedback.plan_feedback` checks it before any call).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

from honing.calls.backends import ChatRequest, SamplingParams
from honing.calls.roles import Role
from honing.method.critique import Critic
from honing.method.feedback import FEEDBACK_COLUMNS, MODES, ParsedFeedback, from_columns
from honing.method.prompts import PromptSet, assistant, user

# continue mode: (answer, its feedback) -> a Splice (text, complete) or None
Splice = Callable[[str, ParsedFeedback], Any]


STRATEGIES = ("parallel", "self_refine", "chain")


@dataclass(frozen=True)
class RefineConfig:
    rounds: int = 1  # at most; self_refine and chain may stop earlier
    mode: str = "continue"  # how a round refines: continue | rewrite | critic
    max_tokens: int = 96
    strategy: str = "self_refine"  # which answers a round refines: parallel | self_refine | chain

    def __post_init__(self):  # checked when params are read, before any model is loaded
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, found {self.strategy!r}")


def _refine_requests(rows: list[dict], cfg: RefineConfig, templates: PromptSet, splice: Splice | None):
    """Requests for the rows that can be refined (rows the feedback does not apply to
    get none and stop refining; a fixed answer line needs no model call)."""
    params = SamplingParams(temperature=0.0, max_tokens=cfg.max_tokens)
    requests, targets, prefixes = [], [], []
    for i, row in enumerate(rows):
        if cfg.mode == "continue":
            cut = splice(row["response"], from_columns(row))  # the parsed fields, not the text again
            if cut is None:  # the feedback does not point at a step of this answer
                continue
            if cut.complete:  # e.g. the answer line was fixed: nothing left to continue
                row["_refined"] = cut.text
                continue
            messages = (user(templates.answer(row["prompt"])), assistant(cut.text))
            requests.append(ChatRequest(messages, params, continue_final_message=True,
                                        template_version=templates.version("answer")))
            prefixes.append(cut.text)
        else:  # rewrite
            messages = (user(templates.refine(row["prompt"], row["response"], row["feedback"])),)
            requests.append(ChatRequest(messages, params, template_version=templates.version("refine")))
            prefixes.append("")
        targets.append(i)
    return requests, targets, prefixes


def refine_rounds(
    feedback: pl.DataFrame, policy: Role | None, critic: Critic, templates: PromptSet,
    cfg: RefineConfig, iteration: str, *, splice: Splice | None = None,
) -> pl.DataFrame:
    """All rounds of every candidate (schema `Refinements`), round 0 included.

    `feedback` holds the answers and their round-0 feedback (`Feedback` columns
    plus `prompt`), parsed already: refinement reads the fields (the flagged step
    for `splice`, the critic's refinement), never the text again. `splice` is the
    task family's continue-mode cut (`honing.tasks.base.TaskFamily.splice`).
    """
    if cfg.mode not in MODES:
        raise ValueError(f"refine.mode must be one of {', '.join(MODES)}, found {cfg.mode!r}")
    if cfg.mode == "continue" and splice is None:
        raise ValueError("refine.mode continue needs a task family with a step checker (its splice)")
    model = policy.model_id if policy is not None else critic.name
    current = [
        {**row, "candidate_id": row["id"], "round": 0, "model": row.get("model", model)}
        for row in feedback.iter_rows(named=True)
    ]
    out = list(current)
    active = [r for r in current if _goes_on(r, cfg.strategy)]
    for rnd in range(1, (0 if cfg.strategy == "parallel" else cfg.rounds) + 1):
        if not active:
            break
        refined = _refine(active, policy, templates, cfg, splice, rnd)
        todo = [(r, text) for r, text in zip(active, refined, strict=True) if text is not None]
        if cfg.strategy == "chain":  # a fixed point ends the chain
            todo = [(r, text) for r, text in todo if text != r["response"]]
        if not todo:
            break
        judged = critic.critique([r["prompt"] for r, _ in todo], [t for _, t in todo])
        active = []
        for (prev, text), (fb_text, fb) in zip(todo, judged, strict=True):
            row = {**prev, "round": rnd, "response": text, "feedback": fb_text, **_fields(fb), "model": model}
            out.append(row)
            if _goes_on(row, cfg.strategy):
                active.append(row)
    return _frame(out, iteration)


def _goes_on(row: dict, strategy: str) -> bool:
    """Whether the next round refines this answer: a chain refines every answer;
    self-refinement only those its critic judged incorrect."""
    return strategy == "chain" or row["verdict"] == "incorrect"


def _refine(rows: list[dict], policy: Role | None, templates: PromptSet, cfg: RefineConfig,
            splice: Splice | None, rnd: int) -> list[str | None]:
    """The refined answer of each row, None where it cannot be refined."""
    if cfg.mode == "critic":
        return [r["refinement"] for r in rows]
    requests, targets, prefixes = _refine_requests(rows, cfg, templates, splice)
    refined = [r.pop("_refined", None) for r in rows]
    results = policy.call(requests, f"refine round {rnd}") if requests else []
    for i, prefix, res in zip(targets, prefixes, results, strict=True):
        refined[i] = f"{prefix} {res.text.strip()}".strip() if prefix else res.text.strip()
    return refined


def _fields(fb: ParsedFeedback) -> dict:
    return {name: getattr(fb, name) for name in FEEDBACK_COLUMNS}


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
            **{name: pl.Series([r[name] for r in rows], dtype=dtype) for name, dtype in FEEDBACK_COLUMNS.items()},
            "model": [r["model"] for r in rows],
            "iteration": [iteration] * len(rows),
        }
    ).sort(["candidate_id", "round"], maintain_order=True)
