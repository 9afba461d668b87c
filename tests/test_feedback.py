import pytest

from honing.method.feedback import parse_srt
from honing.tasks.micro import parse_check

WRONG = ("Step 1 : 39 + 3 : ones 9 + 3 = 12 carry 1 ; tens 3 + 1 = 4 ; gives 42 ; claims 42 ok ; "
         "Step 2 : 42 - 5 : ones 12 - 5 = 7 borrow 1 ; tens 4 - 1 = 3 ; gives 37 ; claims 47 no ; "
         "Verdict : incorrect")


def test_check_incorrect_fields():
    fb = parse_check(WRONG)
    assert fb.verdict == "incorrect" and fb.score == 3
    assert (fb.flagged_step, fb.quoted, fb.recomputed) == (2, "42 - 5", 37)
    assert fb.weaknesses == "step 2 (42 - 5) gives 37, the solution claims 47"
    assert fb.suggestions == "write 37 at step 2 and redo every step after it"


def test_check_correct_scores_ten():
    fb = parse_check("Step 1 : 39 + 3 : ones 9 + 3 = 12 carry 1 ; tens 3 + 1 = 4 ; gives 42 ; claims 42 ok ; "
                     "Verdict : correct")
    assert (fb.verdict, fb.score, fb.parse_error) == ("correct", 10, None)


@pytest.mark.parametrize("text, reason", [
    (WRONG.rsplit(" ; ", 1)[0], "no final 'Verdict"),  # truncated reply
    ("", "no final 'Verdict"),
    (WRONG.replace("claims 47 no", "claims 47 ok"), "no step is marked 'no'"),
    (WRONG.replace("Verdict : incorrect", "Verdict : correct"), "marked 'no' but the verdict is correct"),
])
def test_check_unparsed_keeps_the_reason(text, reason):
    fb = parse_check(text)
    assert fb.verdict == "unparsed" and reason in fb.parse_error and fb.score is None


SRT = """Here is my review.
Weaknesses: the second step subtracts 4 instead of 5.
Score: 4/10
Suggestions: redo step 2.
Verdict: incorrect
Refinement: 39 + 3 = 42; 42 - 5 = 37. The answer is 37."""


def test_srt_all_fields_with_prose_before():
    fb = parse_srt(SRT)
    assert (fb.verdict, fb.score) == ("incorrect", 4)
    assert fb.weaknesses == "the second step subtracts 4 instead of 5."
    assert fb.suggestions == "redo step 2."
    assert fb.refinement == "39 + 3 = 42; 42 - 5 = 37. The answer is 37."


@pytest.mark.parametrize("text, reason", [
    (SRT.replace("Score: 4/10\n", ""), "missing Score"),
    (SRT.replace("Score: 4/10", "Score: 11"), "Score 11 is outside 1..10"),
    (SRT.replace("Score: 4/10", "Score: high"), "not an integer"),
    (SRT.replace("Verdict: incorrect", "Verdict: maybe"), "Verdict must be correct or incorrect"),
    ("I cannot review this.", "none of the fields"),
    (SRT.split("Score")[0], "missing Score"),  # truncated reply
])
def test_srt_edge_cases_are_unparsed_with_reason(text, reason):
    fb = parse_srt(text)
    assert fb.verdict == "unparsed" and reason in fb.parse_error

