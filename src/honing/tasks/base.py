"""The interface a task family implements, and the dispatcher over families.

A prompt row (schemas.prompts.Prompts) names its family in `task`: "micro",
"reference", "reasoning_gym:chain_sum" (the family, then what it needs to know
of the task). A family gives

    verify        the rule check: (response, prompt row) -> True / False, or None
                  when the row has nothing to check against
    final_answer  what `verify` read from the response (for people: filter reasons)

and, where a rule can check an answer step by step (the micro world's oracle):

    check           the rule oracle as a critic: (prompt, response) ->
                    (feedback text, ParsedFeedback with the refinement)
    feedback_format the name of the format `check` writes, and parse_feedback
                    its parser (the policy learns to write it too)
    splice          continue mode: the answer up to its first wrong step with the
                    recomputed value in place (a `Splice`), or None when the
                    feedback does not apply to this answer
    noisy_answer    the meta corpus's balanced-noise answers: (prompt row, rng,
                    p_wrong) -> an answer whose steps are each wrong with p_wrong

A prompt row is a mapping with at least `task`, `answer` and `metadata` (the
family's own data as JSON text, e.g. a reasoning-gym entry).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from honing.errors import HoningError
from honing.method.feedback import ParsedFeedback

Row = Mapping[str, Any]


class TaskError(HoningError, ValueError):
    """A task the user named that cannot be built or checked (one line)."""


class Splice(NamedTuple):
    text: str  # the corrected answer up to the flagged step (or whole)
    complete: bool  # True: a whole answer, nothing left for the policy to continue


@dataclass(frozen=True)
class TaskFamily:
    name: str
    verify: Callable[[str, Row], bool | None]
    final_answer: Callable[[str], str | None]
    check: Callable[[str, str], tuple[str, ParsedFeedback]] | None = None
    feedback_format: str | None = None
    parse_feedback: Callable[[str], ParsedFeedback] | None = None
    splice: Callable[[str, ParsedFeedback], Splice | None] | None = None
    noisy_answer: Callable[[Row, random.Random, float], str] | None = None


def family_name(task: str) -> str:
    """ "reasoning_gym:chain_sum" -> "reasoning_gym"."""
    return task.partition(":")[0]


class Tasks:
    """The families of a set of prompt rows; each row's `task` picks its family."""

    def __init__(self, families: Mapping[str, TaskFamily]):
        self.families = dict(families)

    def family(self, row: Row) -> TaskFamily:
        name = family_name(row["task"])
        if name not in self.families:
            raise TaskError(f"prompt {row.get('id')!r}: task {row['task']!r} is of family {name!r}, which was "
                            f"not loaded (loaded: {', '.join(sorted(self.families)) or 'none'})")
        return self.families[name]

    def verify(self, response: str, row: Row | None) -> bool | None:
        """The rule check of `row`'s family; None for an unknown prompt or one with no reference."""
        return None if row is None else self.family(row).verify(response, row)

    def final_answer(self, response: str, row: Row) -> str | None:
        return self.family(row).final_answer(response)

    def noisy_answer(self, row: Row) -> Callable[[random.Random, float], str] | None:
        """`row`'s balanced-noise writer, bound to it; None where its family has none."""
        write = self.family(row).noisy_answer
        return None if write is None else (lambda rng, p: write(row, rng, p))
