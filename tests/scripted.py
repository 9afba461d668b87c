"""A scripted policy and critic in memory, for unit tests of refinement and evaluation.

`ScriptedPolicy` is a `Backend` whose replies come from dicts given in the test:
answers by question, rewrites by the previous answer, continuations by the spliced
prefix. `ScriptedCritic` answers each response with the feedback text the test gave
for it, parsed by the preset's parser. Anything not in the script fails the test at
once: a refinement rule that asks for something it should not is caught.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from honing.calls.backends import ChatRequest, ChatResult, Completion
from honing.calls.roles import Role
from honing.method.critique import feedback_frame
from honing.method.feedback import parse_srt
from honing.method.prompts import PromptSet

PRESETS = Path(__file__).parents[1] / "prompts"
SRT = PromptSet(PRESETS / "srt")
MICRO = PromptSet(PRESETS / "micro")


class ScriptedPolicy:
    """A backend answering from the script; `requests` records what it was asked."""

    kind = "scripted"

    def __init__(self, answers: dict[str, str] | None = None, rewrites: dict[str, str] | None = None,
                 continuations: dict[str, str] | None = None, model_id: str = "scripted-policy"):
        self.answers, self.rewrites = answers or {}, rewrites or {}
        self.continuations = continuations or {}
        self.model_id = model_id
        self.requests: list[ChatRequest] = []

    def reply(self, request: ChatRequest) -> str:
        text = request.messages[-1]["content"]
        if request.continue_final_message:  # continue mode: the spliced prefix
            return self.continuations[text]
        if text.startswith("Question:\n"):  # the srt refine template
            return self.rewrites[text.split("\n\nYour previous answer:\n", 1)[1].split("\n\nFeedback on it:", 1)[0]]
        if text.startswith("Problem : "):  # the micro answer template
            return self.answers[text.removeprefix("Problem : ").removesuffix(" Solution :")]
        return self.answers[text.split("\n\nWork it out step by step", 1)[0]]  # the srt answer template

    def generate(self, requests, on_result=None):
        results = []
        for i, request in enumerate(requests):
            self.requests.append(request)
            result = ChatResult((Completion(self.reply(request), "stop"),), 1, 1, self.model_id)
            if on_result is not None:
                on_result(i, result)
            results.append(result)
        return results

    def close(self) -> None:
        pass


def policy_role(backend: ScriptedPolicy) -> Role:
    return Role("policy", backend)  # no cache: every call reaches the script


class ScriptedCritic:
    """Feedback by response: `feedback[response]` is the reply text, parsed by `parse`."""

    name = "scripted-critic"

    def __init__(self, feedback: dict[str, str], parse=parse_srt):
        self.feedback, self.parse = feedback, parse
        self.asked: list[list[str]] = []  # the responses of each critique call

    def critique(self, prompts, responses):
        self.asked.append(list(responses))
        return [(self.feedback[r], self.parse(self.feedback[r])) for r in responses]


def srt(verdict: str, score: int, refinement: str | None = None) -> str:
    """A reply in SRT's format."""
    text = f"Weaknesses: {'none' if verdict == 'correct' else 'a wrong sum'}\nScore: {score}\n" \
           f"Suggestions: {'none' if verdict == 'correct' else 'add again'}\nVerdict: {verdict}"
    return text + (f"\nRefinement: {refinement}" if refinement is not None else "")


def round0(answers: dict[str, str], critic, iteration: str = "it1") -> pl.DataFrame:
    """Candidates (one per question, ids c0, c1, ...) critiqued: what refine_rounds reads."""
    questions = list(answers)
    candidates = pl.DataFrame({
        "id": [f"c{i}" for i in range(len(questions))], "prompt_id": [f"p{i}" for i in range(len(questions))],
        "prompt": questions, "response": [answers[q] for q in questions], "model": ["scripted-policy"] * len(questions),
    })
    return feedback_frame(candidates, critic, iteration).with_columns(prompt=candidates["prompt"],
                                                                      model=candidates["model"])


def rounds_of(refinements: pl.DataFrame) -> dict[str, list[str]]:
    """candidate id -> its responses, round by round."""
    out: dict[str, list[str]] = {}
    for r in refinements.sort(["candidate_id", "round"]).iter_rows(named=True):
        out.setdefault(r["candidate_id"], []).append(r["response"])
    return out
