"""The referee: a strong critic with privileged information, served over HTTP.

SRT's strong critic (GPT-4) stands above the policy: it sees more than the policy
does. Where no hosted model is at hand, the referee takes that place: it reads the
feedback prompt the preset's template renders, finds the question in a prompt pool
(a prepared prompts file, which holds each prompt's reference answer and its task
family's verifier data), checks the answer with the task family's own verifier and
writes SRT feedback:

    Weaknesses: the final answer 7 is wrong.
    Score: 3
    Suggestions: Recompute it; end with the line "Answer: <answer>".
    Verdict: incorrect
    Refinement: 4 + 5 = 9
    Answer: 9

A right answer gets "Weaknesses: none", score 10 and verdict correct, and no
refinement (the meta corpus then takes the answer itself). The refinement of a
wrong one is the prompt's reference solution where it has one, else the gold
answer after the task's own expression where its data holds one, else after a
plain sentence; its last line is "Answer: <answer>", as the SRT answer template asks.

A request that is not the template's feedback prompt, or whose question is not in
the pool, gets a reply that says so in one line and does not parse as feedback, so
the critic's parse guard (`min_parse_rate`) stops a run pointed at the wrong pool.

`referee_server(...)` is a `ChatServer` (honing.calls.server) answering with a
`Referee`: the openai backend talks to it like to any OpenAI-compatible server.
`honing serve --referee PATH` runs one from the command line.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from honing.calls.server import ChatServer
from honing.errors import HoningError
from honing.method.prompts import PromptSet
from honing.tasks.families import load_tasks

NEEDED = ("prompt", "answer", "task", "metadata")  # the prompt pool's columns the referee reads
# Short on purpose: the policy learns to write this feedback itself, token by token.
SUGGESTION = 'Recompute it; end with the line "Answer: <answer>".'
_SLOTS = ("\x00PROMPT\x00", "\x00RESPONSE\x00")


class RefereeError(HoningError, ValueError):
    """A referee that cannot start: its pool or templates are not usable (one line)."""


def feedback_pattern(templates: PromptSet) -> re.Pattern[str]:
    """A regex that reads (prompt, response) back out of the feedback template's text."""
    text = templates.feedback(*_SLOTS)
    if any(text.count(slot) != 1 for slot in _SLOTS) or text.index(_SLOTS[0]) > text.index(_SLOTS[1]):
        raise RefereeError(f"{templates.folder}/feedback.jinja2: the referee needs the prompt, then the response, "
                           "each exactly once")
    before, rest = text.split(_SLOTS[0])
    middle, after = rest.split(_SLOTS[1])
    return re.compile(f"{re.escape(before)}(?P<prompt>.*){re.escape(middle)}(?P<response>.*){re.escape(after)}",
                      re.DOTALL)


class Referee:
    """messages -> SRT feedback text, from the pool at `source` (a prompts .parquet
    file, or a folder of them). The pool is read when first needed and read again
    when a question is not in it and a file has changed since, so a referee started
    before `dvc repro` prepares the prompts still finds them."""

    def __init__(self, source: str | Path, templates: str | Path | PromptSet):
        self.source = Path(source)
        try:
            self.templates = templates if isinstance(templates, PromptSet) else PromptSet(templates)
        except FileNotFoundError as e:
            raise RefereeError(f"referee templates: {e}") from e
        self.pattern = feedback_pattern(self.templates)
        self._rows: dict[str, dict[str, Any]] = {}
        self._stamp: tuple | None = None
        self._tasks = None
        self._lock = threading.Lock()

    # ---- the pool ------------------------------------------------------------------------
    def _files(self) -> list[Path]:
        if self.source.is_dir():
            return sorted(self.source.glob("*.parquet"))
        return [self.source] if self.source.is_file() else []

    def _load(self) -> None:
        files = self._files()
        stamp = tuple((str(f), f.stat().st_mtime_ns) for f in files)
        if stamp == self._stamp:
            return
        rows: dict[str, dict[str, Any]] = {}
        for f in files:
            frame = pl.read_parquet(f)
            missing = [c for c in NEEDED if c not in frame.columns]
            if missing:  # e.g. a quarantine file beside the prompts: not a pool
                continue
            for r in frame.iter_rows(named=True):
                rows.setdefault(r["prompt"], r)
        self._rows, self._stamp = rows, stamp
        self._tasks = load_tasks({r["task"] for r in rows.values()}) if rows else None

    def row(self, prompt: str) -> dict[str, Any] | None:
        with self._lock:
            if prompt not in self._rows:
                self._load()
            return self._rows.get(prompt)

    def check(self) -> int:
        """The pool's size now; an error when there is no pool at `source` yet is left
        to the requests (the server may start before the prompts exist)."""
        with self._lock:
            self._load()
            return len(self._rows)

    # ---- answering -----------------------------------------------------------------------
    def __call__(self, messages: list[dict]) -> str:
        text = str(messages[-1].get("content", "")) if messages else ""
        m = self.pattern.fullmatch(text)
        if m is None:
            return "The referee cannot judge this request: it is not the preset's feedback prompt."
        row = self.row(m.group("prompt"))
        if row is None:
            return f"The referee cannot judge this request: the question is not in {self.source}."
        return self.feedback(row, m.group("response"))

    def feedback(self, row: Mapping[str, Any], response: str) -> str:
        """SRT feedback on `response` to the pool's `row`."""
        with self._lock:
            tasks = self._tasks if self._tasks is not None else load_tasks([row["task"]])
        verdict = tasks.verify(response, row)
        if verdict is None:
            return "The referee cannot judge this request: the question has no reference answer."
        if verdict:
            return "Weaknesses: none\nScore: 10\nSuggestions: none\nVerdict: correct"
        claimed = tasks.final_answer(response, row)
        if claimed is None or not response.strip():
            weakness, score = "the answer gives no final answer.", 1
        elif not re.search(r"^\W*answer\W*:", response, re.IGNORECASE | re.MULTILINE):
            weakness, score = f"the final answer {_short(claimed)} is wrong, and no line gives it as \"Answer:\".", 2
        else:
            weakness, score = f"the final answer {_short(claimed)} is wrong.", 3
        return (f"Weaknesses: {weakness}\nScore: {score}\n"
                f"Suggestions: {SUGGESTION}\n"
                f"Verdict: incorrect\nRefinement: {refinement(row)}")


def _short(value: str, width: int = 40) -> str:
    """A claimed answer as the weakness quotes it: a number bare, anything else in quotes."""
    value = " ".join(value.split())
    value = value if len(value) <= width else value[: width - 3] + "..."
    return value if re.fullmatch(r"-?[\d.,/]+", value) else f'"{value}"'



def refinement(row: Mapping[str, Any]) -> str:
    """The corrected answer: the reference solution, else the task's expression = the
    gold answer, else a sentence; always ending "Answer: <answer>"."""
    gold = str(row["answer"]).rsplit("####", 1)[-1].strip()
    if row.get("reference"):
        body = str(row["reference"]).rsplit("####", 1)[0].strip()
        return f"{body}\nAnswer: {gold}" if body else f"Answer: {gold}"
    expression = None
    if row.get("metadata"):
        try:
            expression = (json.loads(row["metadata"]).get("metadata") or {}).get("expression")
        except (ValueError, AttributeError):
            expression = None
    first = f"{expression} = {gold}" if isinstance(expression, str) and expression else f"The answer is {gold}."
    return f"{first}\nAnswer: {gold}"


def referee_server(source: str | Path, templates: str | Path | PromptSet, *, model: str = "referee",
                   port: int = 0, host: str = "127.0.0.1", log_path: str | Path | None = None) -> ChatServer:
    """An OpenAI-compatible server (not started) whose replies are the referee's."""
    return ChatServer(reply=Referee(source, templates), model=model, host=host, port=port, log_path=log_path)
