"""The micro world: seeded arithmetic word problems with numbered-step solutions.

A problem starts from a number (10-60) and applies 2-4 steps of "+ d" or "- d"
(d in 2..9), staying within 10..99. A solution is written one step at a time,
    "Step 1 : 34 + 7 = 41 ; Step 2 : 41 - 5 = 36 ; Answer : 36"
so a rule can check every step. Every token is separated by a space; the tiny
tokenizer splits numbers into digits.

`noisy_solution` writes the solutions the base model is pretrained on: a
systematic mistake (the carry of an addition dropped, 34 + 7 = 31) in most carry
additions plus some random wrong steps, so the base model is clearly imperfect.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

NAMES = ("Ann", "Ben", "Cal", "Dee", "Eli", "Fay")
THINGS = ("coins", "apples", "stamps", "marbles", "cards", "shells")
GAIN_PHRASES = ("gets {d} more", "finds {d} more", "buys {d} more")
LOSS_PHRASES = ("gives away {d}", "loses {d}", "sells {d}")

LOW, HIGH = 10, 99


@dataclass(frozen=True)
class Problem:
    start: int
    ops: tuple[tuple[str, int], ...]  # ("+", 7), ("-", 5), ...
    text: str

    @property
    def values(self) -> list[int]:
        """The running value after each step (the gold chain)."""
        out, v = [], self.start
        for op, d in self.ops:
            v = apply(v, op, d)
            out.append(v)
        return out

    @property
    def answer(self) -> int:
        return self.values[-1]


def apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b


def make_problem(rng: random.Random, min_steps: int = 2, max_steps: int = 4) -> Problem:
    start = rng.randint(10, 60)
    n = rng.randint(min_steps, max_steps)
    ops, v = [], start
    for _ in range(n):
        d = rng.randint(2, 9)
        op = rng.choice("+-")
        if apply(v, op, d) < LOW:
            op = "+"
        elif apply(v, op, d) > HIGH:
            op = "-"
        ops.append((op, d))
        v = apply(v, op, d)
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    sentences = [f"{name} has {start} {thing} ."]
    for op, d in ops:
        phrase = rng.choice(GAIN_PHRASES if op == "+" else LOSS_PHRASES)
        sentences.append(f"{name} {phrase.format(d=d)} .")
    sentences.append(f"How many {thing} now ?")
    return Problem(start, tuple(ops), " ".join(sentences))


_START = re.compile(r"has (\d+) ")
_GAIN = re.compile(r"(?:gets|finds|buys) (\d+) more")
_LOSS = re.compile(r"(?:gives away|loses|sells) (\d+)")


def parse_problem(text: str) -> Problem:
    """Recover the structured problem from its text (the oracle reads only text)."""
    m = _START.search(text)
    if not m:
        raise ValueError(f"not a micro-world problem: {text[:60]!r}")
    ops = []
    for sentence in text.split(" . ")[1:]:
        if g := _GAIN.search(sentence):
            ops.append(("+", int(g.group(1))))
        elif l := _LOSS.search(sentence):
            ops.append(("-", int(l.group(1))))
    return Problem(int(m.group(1)), tuple(ops), text)


def format_step(i: int, a: int, op: str, b: int, c: int) -> str:
    return f"Step {i} : {a} {op} {b} = {c}"


def format_solution(steps: list[tuple[int, str, int, int]], answer: int) -> str:
    body = " ; ".join(format_step(i + 1, *s) for i, s in enumerate(steps))
    return f"{body} ; Answer : {answer}"


def gold_solution(problem: Problem) -> str:
    return solution_from(problem, [])


def solution_from(problem: Problem, claimed: list[int]) -> str:
    """A solution whose first steps claim `claimed` values, the rest computed correctly."""
    steps, v = [], problem.start
    for i, (op, d) in enumerate(problem.ops):
        c = claimed[i] if i < len(claimed) else apply(v, op, d)
        steps.append((v, op, d, c))
        v = c
    return format_solution(steps, v)


def has_carry(a: int, op: str, b: int) -> bool:
    return op == "+" and a % 10 + b >= 10


def has_borrow(a: int, op: str, b: int) -> bool:
    return op == "-" and a % 10 < b


def wrong_value(rng: random.Random, right: int) -> int:
    """A plausible wrong result: off by 1, 2 or 10, kept within two digits."""
    for _ in range(10):
        w = right + rng.choice((-10, -2, -1, 1, 2, 10))
        if 0 <= w <= HIGH and w != right:
            return w
    return right + 1 if right < HIGH else right - 1


def _non_negative(write):
    """Retry a noisy writer until no claimed value is negative (a wrong chain can
    drift below zero, which the world never writes)."""

    def wrapper(problem: Problem, rng: random.Random, *args, **kwargs) -> str:
        for _ in range(20):
            text = write(problem, rng, *args, **kwargs)
            if "= -" not in text and ": -" not in text:
                return text
        return gold_solution(problem)

    wrapper.__doc__ = write.__doc__
    return wrapper


@_non_negative
def noisy_solution(
    problem: Problem, rng: random.Random, carry_drop: float, step_noise: float
) -> str:
    """A solution with the base model's mistakes; later steps continue from wrong values."""
    steps, v = [], problem.start
    for op, d in problem.ops:
        c = apply(v, op, d)
        if has_carry(v, op, d) and rng.random() < carry_drop:
            c -= 10  # the carry is dropped: 34 + 7 = 31
        elif rng.random() < step_noise:
            c = wrong_value(rng, c)
        steps.append((v, op, d, c))
        v = c
    return format_solution(steps, v)


@_non_negative
def balanced_noisy_solution(problem: Problem, rng: random.Random, p_wrong: float = 0.5) -> str:
    """Each step wrong with probability `p_wrong`, independent of carries: critique
    training data that does not teach "a carry step means wrong"."""
    steps, v = [], problem.start
    for op, d in problem.ops:
        c = apply(v, op, d)
        if rng.random() < p_wrong:
            c = c - 10 if has_carry(v, op, d) and rng.random() < 0.5 else wrong_value(rng, c)
        steps.append((v, op, d, c))
        v = c
    return format_solution(steps, v)


_STEP = re.compile(r"^Step (\d+) : (\d+) ([+-]) (\d+) = (\d+)$")
_ANSWER = re.compile(r"^Answer : (\d+)$")


@dataclass(frozen=True)
class ParsedSolution:
    steps: list[tuple[int, str, int, int]]  # (a, op, b, claimed c)
    answer: int | None
    error: str | None  # why parsing stopped, None if the whole solution parsed


def parse_solution(text: str) -> ParsedSolution:
    """Parse "Step i : a op b = c ; ... ; Answer : x"; stops at the first malformed part."""
    steps: list[tuple[int, str, int, int]] = []
    for part in (p.strip() for p in text.split(";")):
        if m := _STEP.match(part):
            if int(m.group(1)) != len(steps) + 1:
                return ParsedSolution(steps, None, f"step {len(steps) + 1} is numbered {m.group(1)}")
            steps.append((int(m.group(2)), m.group(3), int(m.group(4)), int(m.group(5))))
        elif m := _ANSWER.match(part):
            return ParsedSolution(steps, int(m.group(1)), None)
        else:
            return ParsedSolution(steps, None, f"malformed part {part[:40]!r}")
    return ParsedSolution(steps, None, "no final answer line")


def final_answer(text: str) -> int | None:
    m = re.search(r"Answer : (\d+)\s*$", text.strip())
    return int(m.group(1)) if m else None


def vocabulary() -> list[str]:
    """Every word the micro world writes (numbers excepted: they are digits)."""
    words = set()
    for s in (*NAMES, *THINGS, *GAIN_PHRASES, *LOSS_PHRASES, "has . How many now ?"):
        words.update(w for w in s.split() if w != "{d}")
    words.update("Step : = ; Answer + -".split())
    return sorted(words)
