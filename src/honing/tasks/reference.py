"""reference: prompts with a reference answer (files, `hf:` datasets), checked by rule.

The final answer of a response is "Answer : x" at its end (the micro world's form),
else the last number in it (thousands separators read: "1,200"). A reference may be
GSM8K-style, "reasoning #### 72", whose final answer is what follows "####".
A row with no reference answer is not checked (None).
"""

from __future__ import annotations

import re

from honing.tasks.base import Row, TaskFamily

_ANSWER_LINE = re.compile(r"Answer : (\S+)\s*$")
_LAST_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def extract_answer(response: str) -> str | None:
    """The final answer: "Answer : x" at the end, else the last number in the text."""
    if m := _ANSWER_LINE.search(response.strip()):
        return m.group(1)
    numbers = _LAST_NUMBER.findall(response)
    return numbers[-1] if numbers else None


def reference_answer(answer: str) -> str:
    """The final answer of a reference: GSM8K-style "reasoning #### 72" gives "72"."""
    return answer.rsplit("####", 1)[-1].strip() if "####" in answer else answer.strip()


def _normal(value: str) -> str:
    return value.replace(",", "").rstrip(".").strip()


def rule_correct(response: str, answer: str | None) -> bool | None:
    """True/False against the reference answer; None where there is none."""
    if answer is None:
        return None
    got = extract_answer(response)
    return got is not None and _normal(got) == _normal(reference_answer(str(answer)))


def verify(response: str, row: Row) -> bool | None:
    return rule_correct(response, row.get("answer"))


def family() -> TaskFamily:
    return TaskFamily("reference", verify=verify, final_answer=extract_answer)
