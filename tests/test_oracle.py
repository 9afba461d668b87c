import random

from honing.micro import oracle, world
from honing.tasks.micro import parse_check

P = world.Problem(39, (("+", 3), ("-", 5)), "Ann has 39 coins . Ann gets 3 more . Ann loses 5 . How many coins now ?")


def test_correct_answer_checks_every_step():
    v = oracle.check(P, "Step 1 : 39 + 3 = 42 ; Step 2 : 42 - 5 = 37 ; Answer : 37")
    assert v.correct and v.wrong_step is None
    assert v.feedback == (
        "Step 1 : 39 + 3 : ones 9 + 3 = 12 carry 1 ; tens 3 + 1 = 4 ; gives 42 ; claims 42 ok ; "
        "Step 2 : 42 - 5 : ones 12 - 5 = 7 borrow 1 ; tens 4 - 1 = 3 ; gives 37 ; claims 37 ok ; "
        "Verdict : correct"
    )


def test_dropped_carry_is_the_first_wrong_step():
    v = oracle.check(P, "Step 1 : 39 + 3 = 32 ; Step 2 : 32 - 5 = 27 ; Answer : 27")
    assert not v.correct and (v.wrong_step, v.recomputed) == (1, 42)
    assert v.feedback.endswith("gives 42 ; claims 32 no ; Verdict : incorrect")
    assert v.refinement == "Step 1 : 39 + 3 = 42 ; Step 2 : 42 - 5 = 37 ; Answer : 37"


def test_wrong_final_answer_line():
    v = oracle.check(P, "Step 1 : 39 + 3 = 42 ; Step 2 : 42 - 5 = 37 ; Answer : 36")
    assert (v.wrong_step, v.recomputed) == (3, 37)
    assert v.feedback.endswith("Answer : gives 37 ; claims 36 no ; Verdict : incorrect")


def test_wrong_operand_and_truncated_solution():
    v = oracle.check(P, "Step 1 : 39 + 4 = 43 ; Step 2 : 43 - 5 = 38 ; Answer : 38")
    assert v.wrong_step == 1 and "claims 39 + 4 = 43 no" in v.feedback
    v = oracle.check(P, "Step 1 : 39 + 3 = 42")
    assert v.wrong_step == 2 and "claims nothing no" in v.feedback


def test_oracle_feedback_round_trips_through_the_parser():
    rng = random.Random(0)
    for _ in range(1000):
        p = world.make_problem(rng)
        r = world.balanced_noisy_solution(p, rng)
        v = oracle.check(p, r)
        fb = parse_check(v.feedback)
        assert fb.verdict == ("correct" if v.correct else "incorrect")
        assert (fb.flagged_step, fb.recomputed) == (v.wrong_step, v.recomputed)
