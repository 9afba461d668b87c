"""The rule oracle: the strong critic of the micro world.

It checks a solution step by step with a procedure easier than the one the answer
uses (digit by digit, recompute first, then restate the claim) and stops at the
first wrong step:

    Step 2 : 39 + 3 : ones 9 + 3 = 12 carry 1 ; tens 3 + 1 = 4 ; gives 42 ; claims 32 no ;
    Verdict : incorrect

A correct solution has every step checked and ends "Verdict : correct". This text
is what the policy learns to write as its own feedback; `honing.method.feedback` parses
it (the oracle's or the model's) into weaknesses, score, suggestions and verdict.
The refinement the oracle writes is the corrected solution.
"""

from __future__ import annotations

from dataclasses import dataclass

from honing.micro.world import (
    Problem,
    apply,
    parse_problem,
    parse_solution,
    solution_from,
)


def check_step(i: int, a: int, op: str, b: int) -> tuple[str, int]:
    """The digit-by-digit recomputation of one step; returns (text, value)."""
    tens, ones = divmod(a, 10)
    if op == "+":
        s = ones + b
        if s >= 10:
            text = f"ones {ones} + {b} = {s} carry 1 ; tens {tens} + 1 = {tens + 1}"
        else:
            text = f"ones {ones} + {b} = {s} ; tens {tens}"
    else:
        if ones >= b:
            text = f"ones {ones} - {b} = {ones - b} ; tens {tens}"
        else:
            text = f"ones {ones + 10} - {b} = {ones + 10 - b} borrow 1 ; tens {tens} - 1 = {tens - 1}"
    return f"Step {i} : {a} {op} {b} : {text}", apply(a, op, b)


@dataclass(frozen=True)
class OracleVerdict:
    feedback: str  # the check text, in the format the policy learns
    correct: bool
    wrong_step: int | None  # 1-based; len(ops) + 1 means the answer line
    recomputed: int | None  # the right value at the wrong step
    refinement: str  # the corrected solution (gold)


def check(problem: Problem, response: str) -> OracleVerdict:
    """Check `response` against the problem's steps; stop at the first wrong step."""
    parsed = parse_solution(response)
    gold = solution_from(problem, [])
    parts: list[str] = []
    v = problem.start
    for i, (op, d) in enumerate(problem.ops, start=1):
        text, right = check_step(i, v, op, d)
        if i > len(parsed.steps):  # the solution stopped or broke before this step
            parts.append(f"{text} ; gives {right} ; claims nothing no")
            return _wrong(parts, i, right, gold)
        a, claimed_op, b, c = parsed.steps[i - 1]
        if (a, claimed_op, b) != (v, op, d):
            # The step does not do what the problem says (wrong operand or operator).
            parts.append(f"{text} ; gives {right} ; claims {a} {claimed_op} {b} = {c} no")
            return _wrong(parts, i, right, gold)
        ok = c == right
        parts.append(f"{text} ; gives {right} ; claims {c} {'ok' if ok else 'no'}")
        if not ok:
            return _wrong(parts, i, right, gold)
        v = right
    if parsed.answer != v:
        claimed = "nothing" if parsed.answer is None else str(parsed.answer)
        parts.append(f"Answer : gives {v} ; claims {claimed} no")
        return _wrong(parts, len(problem.ops) + 1, v, gold)
    parts.append("Verdict : correct")
    return OracleVerdict(" ; ".join(parts), True, None, None, gold)


def _wrong(parts: list[str], step: int, right: int, gold: str) -> OracleVerdict:
    parts.append("Verdict : incorrect")
    return OracleVerdict(" ; ".join(parts), False, step, right, gold)


def check_text(problem_text: str, response: str) -> OracleVerdict:
    return check(parse_problem(problem_text), response)
