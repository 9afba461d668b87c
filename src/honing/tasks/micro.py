"""micro: the embedded arithmetic world as a task family (`honing.micro`).

Its prompts are seeded word problems with a gold solution (`reference`) and answer;
its rule check is the reference family's ("Answer : x"); and, as it can check an
answer step by step, it brings what the other families lack:

- the rule oracle as a critic, writing the "check" feedback format
  ("Step 2 : 39 + 3 : ones 9 + 3 = 12 carry 1 ; tens 3 + 1 = 4 ; gives 42 ;
  claims 32 no ; Verdict : incorrect") with the corrected solution as refinement;
- the parser of that format (the policy learns to write it), where the first
  step marked "no" is the weakness;
- continue-mode refinement: the flagged step's recomputed value put in place of
  the claimed one, accepted only if the feedback quoted that step's operands as
  the answer wrote them (the second prototype's finding);
- balanced-noise answers for the meta corpus.
"""

from __future__ import annotations

import random
import re
from dataclasses import replace

from honing.method.feedback import ParsedFeedback, unparsed
from honing.micro import oracle, world
from honing.tasks import reference
from honing.tasks.base import Row, Splice, TaskFamily

FEEDBACK_FORMAT = "check"


def problems(n: int, rng: random.Random, min_steps: int, max_steps: int) -> list[dict[str, str]]:
    """`n` distinct problems, each {prompt, answer, reference (the gold solution)}. A
    larger `n` keeps a smaller one's problems (the same seeded draws)."""
    seen, out = set(), []
    for _ in range(50 * n + 1000):  # the world holds far more than any n asked of it
        if len(out) == n:
            break
        problem = world.make_problem(rng, min_steps, max_steps)
        if problem.text in seen:
            continue
        seen.add(problem.text)
        out.append({"prompt": problem.text, "answer": str(problem.answer),
                    "reference": world.gold_solution(problem)})
    return out


# ---------------------------------------------------------------- the "check" format


_CHECK_STEP = re.compile(r"^Step (\d+) : (\d+) ([+-]) (\d+) : ")
_GIVES = re.compile(r"^gives (\d+)$")
_CLAIMS = re.compile(r"^claims (.+) (ok|no)$")
_ANSWER_GIVES = re.compile(r"^Answer : gives (\d+)$")
_VERDICT = re.compile(r"^Verdict : (correct|incorrect)$")


def check_score(steps_ok: int) -> int:
    """1-10 from how many steps passed before the first wrong one (10 when correct)."""
    return min(9, 1 + 2 * steps_ok)


def parse_check(text: str) -> ParsedFeedback:
    """Parse the step-by-step check; the first "no" is the weakness, and its step, the
    operation quoted there and the recomputed value are the feedback's `flagged_step`,
    `quoted` and `recomputed`."""
    parts = [p.strip() for p in text.strip().split(";")]
    if not parts or not (m := _VERDICT.match(parts[-1])):
        return unparsed("no final 'Verdict : correct|incorrect'")
    verdict = m.group(1)
    steps_ok, step, quoted, gives = 0, None, None, None
    for part in parts[:-1]:
        if s := _CHECK_STEP.match(part):
            step, quoted = int(s.group(1)), f"{int(s.group(2))} {s.group(3)} {int(s.group(4))}"
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
            operation = f" ({quoted})" if quoted else ""
            return ParsedFeedback(
                "incorrect",
                check_score(steps_ok),
                weaknesses=f"{where}{operation} gives {gives}, the solution claims {c.group(1)}",
                suggestions=f"write {gives} at {where} and redo every step after it",
                flagged_step=step,
                quoted=quoted,
                recomputed=gives,
            )
    if verdict == "incorrect":
        return unparsed("verdict incorrect but no step is marked 'no'")
    return ParsedFeedback("correct", 10, weaknesses="none", suggestions="none")


def check(prompt: str, response: str) -> tuple[str, ParsedFeedback]:
    """The rule oracle's feedback on one answer, parsed, with the gold solution as refinement."""
    verdict = oracle.check_text(prompt, response)
    return verdict.feedback, replace(parse_check(verdict.feedback), refinement=verdict.refinement)


# ---------------------------------------------------------------- continue mode


def corrected_prefix(response: str, fb: ParsedFeedback) -> str | None:
    """The answer up to its first wrong step, with the recomputed value in place.

    Reads the feedback's structured fields (`flagged_step`, `quoted`, `recomputed`,
    as the Feedback artifact holds them). None when the feedback does not apply to
    this answer (no flagged step, or the operation it quotes is not the one the
    answer wrote there).
    """
    if fb.verdict != "incorrect" or fb.flagged_step is None or fb.recomputed is None:
        return None
    steps = world.parse_solution(response).steps
    k = fb.flagged_step
    kept = [world.format_step(i + 1, *s) for i, s in enumerate(steps[: k - 1])]
    if fb.quoted is None:  # the final answer line is wrong; every step was right
        if len(steps) != k - 1:
            return None
        return " ; ".join([*kept, f"Answer : {fb.recomputed}"])
    if len(steps) < k:
        return None
    a, op, b, _ = steps[k - 1]
    if f"{a} {op} {b}" != fb.quoted:
        return None
    return " ; ".join([*kept, world.format_step(k, a, op, b, fb.recomputed)])


def splice(response: str, fb: ParsedFeedback) -> Splice | None:
    """Continue mode's cut of `response` by its feedback's structured fields."""
    prefix = corrected_prefix(response, fb)
    if prefix is None:
        return None
    # a fixed answer line is a whole answer: nothing left for the policy to continue
    return Splice(prefix, complete=fb.quoted is None)


def noisy_answer(row: Row, rng: random.Random, p_wrong: float) -> str:
    return world.balanced_noisy_solution(world.parse_problem(row["prompt"]), rng, p_wrong)


def family() -> TaskFamily:
    return TaskFamily(
        "micro", verify=reference.verify, final_answer=reference.extract_answer,
        check=check, feedback_format=FEEDBACK_FORMAT, parse_feedback=parse_check,
        splice=splice, noisy_answer=noisy_answer, vectorized=reference.VECTORIZED,
    )
