"""Parsing feedback replies into fields: weaknesses, score, suggestions, verdict.

Two formats, one per preset:
- "check": the micro world's step-by-step check (see `honing.micro.oracle`), written
  by the rule oracle and learnt by the policy. Weaknesses, suggestions and
  the score are derived from the first step marked "no".
- "srt": SRT's critic format, "Weaknesses: … Score: 7 … Suggestions: … Verdict: …
  Refinement: …", for real models.

A reply that cannot be parsed is kept with verdict "unparsed" and the reason in
`parse_error`; it is never dropped silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ParsedFeedback:
    verdict: str  # "correct", "incorrect" or "unparsed"
    score: int | None
    weaknesses: str | None
    suggestions: str | None
    parse_error: str | None = None
    refinement: str | None = None  # srt: the critic's own refinement
    wrong_step: int | None = None  # check: 1-based; n_steps + 1 is the answer line
    recomputed: int | None = None  # check: the value the check computed there
    quoted: tuple[int, str, int] | None = None  # check: the operands it quoted


def unparsed(reason: str) -> ParsedFeedback:
    return ParsedFeedback("unparsed", None, None, None, parse_error=reason)


_CHECK_STEP = re.compile(r"^Step (\d+) : (\d+) ([+-]) (\d+) : ")
_GIVES = re.compile(r"^gives (\d+)$")
_CLAIMS = re.compile(r"^claims (.+) (ok|no)$")
_ANSWER_GIVES = re.compile(r"^Answer : gives (\d+)$")
_VERDICT = re.compile(r"^Verdict : (correct|incorrect)$")


def check_score(steps_ok: int) -> int:
    """1-10 from how many steps passed before the first wrong one (10 when correct)."""
    return min(9, 1 + 2 * steps_ok)


def parse_check(text: str) -> ParsedFeedback:
    """Parse the step-by-step check; the first "no" is the weakness."""
    parts = [p.strip() for p in text.strip().split(";")]
    if not parts or not (m := _VERDICT.match(parts[-1])):
        return unparsed("no final 'Verdict : correct|incorrect'")
    verdict = m.group(1)
    steps_ok, step, quoted, gives = 0, None, None, None
    for part in parts[:-1]:
        if s := _CHECK_STEP.match(part):
            step, quoted = int(s.group(1)), (int(s.group(2)), s.group(3), int(s.group(4)))
        elif a := _ANSWER_GIVES.match(part):
            step, quoted, gives = steps_ok + 1, None, int(a.group(1))
        elif g := _GIVES.match(part):
            gives = int(g.group(1))
        elif c := _CLAIMS.match(part):
            if c.group(2) == "ok":
                steps_ok += 1
                continue
            if verdict == "correct":
                return unparsed(f"step {step} is marked 'no' but the verdict is correct")
            where = f"step {step}" if quoted else "the final answer"
            operation = f" ({quoted[0]} {quoted[1]} {quoted[2]})" if quoted else ""
            return ParsedFeedback(
                "incorrect",
                check_score(steps_ok),
                weaknesses=f"{where}{operation} gives {gives}, the solution claims {c.group(1)}",
                suggestions=f"write {gives} at {where} and redo every step after it",
                wrong_step=step,
                recomputed=gives,
                quoted=quoted,
            )
    if verdict == "incorrect":
        return unparsed("verdict incorrect but no step is marked 'no'")
    return ParsedFeedback("correct", 10, weaknesses="none", suggestions="none")


_SRT_FIELDS = ("Weaknesses", "Score", "Suggestions", "Verdict", "Refinement")
_SRT_HEADER = re.compile(rf"^\s*\**({'|'.join(_SRT_FIELDS)})\**\s*:\s*", re.MULTILINE | re.IGNORECASE)


def parse_srt(text: str) -> ParsedFeedback:
    """Parse SRT-style critic output; tolerant of prose before the first field."""
    heads = list(_SRT_HEADER.finditer(text))
    if not heads:
        return unparsed("none of the fields Weaknesses/Score/Suggestions/Verdict found")
    fields: dict[str, str] = {}
    for head, nxt in zip(heads, [*heads[1:], None]):
        end = nxt.start() if nxt else len(text)
        fields.setdefault(head.group(1).capitalize(), text[head.end():end].strip())
    if "Score" not in fields:
        return unparsed("missing Score")
    m = re.match(r"(\d+)(?:\s*/\s*10)?\b", fields["Score"])
    if not m:
        return unparsed(f"Score is not an integer: {fields['Score'][:20]!r}")
    score = int(m.group(1))
    if not 1 <= score <= 10:
        return unparsed(f"Score {score} is outside 1..10")
    verdict = fields.get("Verdict", "").lower().strip(" .*")
    if verdict not in ("correct", "incorrect"):
        return unparsed(f"Verdict must be correct or incorrect, found {verdict[:20]!r}")
    return ParsedFeedback(
        verdict,
        score,
        weaknesses=fields.get("Weaknesses", ""),
        suggestions=fields.get("Suggestions", ""),
        refinement=fields.get("Refinement") or None,
    )


PARSERS = {"check": parse_check, "srt": parse_srt}


def parse_feedback(text: str, fmt: str) -> ParsedFeedback:
    try:
        parser = PARSERS[fmt]
    except KeyError:
        raise ValueError(f"unknown feedback format {fmt!r}: expected one of {', '.join(PARSERS)}")
    return parser(text)
