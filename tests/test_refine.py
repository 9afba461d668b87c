from honing.method.feedback import unparsed
from honing.method.filters import final_answers
from honing.micro import oracle, world
from honing.tasks.micro import corrected_prefix, parse_check, splice

P = world.Problem(39, (("+", 3), ("-", 5), ("+", 4)),
                  "Ann has 39 coins . Ann gets 3 more . Ann loses 5 . Ann finds 4 more . How many coins now ?")


def fb_for(response):
    return parse_check(oracle.check(P, response).feedback)


def test_prefix_puts_the_recomputed_value_in_place_of_the_claimed_one():
    response = "Step 1 : 39 + 3 = 42 ; Step 2 : 42 - 5 = 47 ; Step 3 : 47 + 4 = 51 ; Answer : 51"
    assert corrected_prefix(response, fb_for(response)) == "Step 1 : 39 + 3 = 42 ; Step 2 : 42 - 5 = 37"


def test_wrong_answer_line_is_fixed_whole():
    response = "Step 1 : 39 + 3 = 42 ; Step 2 : 42 - 5 = 37 ; Step 3 : 37 + 4 = 41 ; Answer : 40"
    assert corrected_prefix(response, fb_for(response)) == (
        "Step 1 : 39 + 3 = 42 ; Step 2 : 42 - 5 = 37 ; Step 3 : 37 + 4 = 41 ; Answer : 41")


def test_feedback_quoting_other_operands_is_not_applied():
    response = "Step 1 : 39 + 3 = 42 ; Step 2 : 42 - 5 = 47 ; Step 3 : 47 + 4 = 51 ; Answer : 51"
    other = "Step 1 : 39 + 3 = 42 ; Step 2 : 42 - 6 = 47 ; Step 3 : 47 + 4 = 51 ; Answer : 51"
    # feedback written for a different answer: quotes 42 - 5 while this answer wrote 42 - 6
    assert corrected_prefix(other, fb_for(response)) is None


def test_correct_or_unparsed_feedback_gives_no_prefix():
    gold = world.gold_solution(P)
    assert corrected_prefix(gold, fb_for(gold)) is None
    assert corrected_prefix(gold, unparsed("x")) is None


def test_final_answers_take_the_last_round():
    import polars as pl

    rows = pl.DataFrame({"candidate_id": ["a", "a", "b"], "round": [0, 1, 0], "response": ["x", "y", "z"]})
    out = final_answers(rows).sort("candidate_id")
    assert out["response"].to_list() == ["y", "z"]


def test_splice_marks_a_fixed_answer_line_as_complete():
    wrong_step = "Step 1 : 39 + 3 = 42 ; Step 2 : 42 - 5 = 47 ; Step 3 : 47 + 4 = 51 ; Answer : 51"
    wrong_line = "Step 1 : 39 + 3 = 42 ; Step 2 : 42 - 5 = 37 ; Step 3 : 37 + 4 = 41 ; Answer : 40"
    assert splice(wrong_step, fb_for(wrong_step)) == ("Step 1 : 39 + 3 = 42 ; Step 2 : 42 - 5 = 37", False)
    assert splice(wrong_line, fb_for(wrong_line)).complete
    assert splice(wrong_step, unparsed("x")) is None


def test_splice_reads_the_structured_fields_not_the_text():
    from honing.method.feedback import ParsedFeedback

    response = "Step 1 : 39 + 3 = 42 ; Step 2 : 42 - 5 = 47 ; Step 3 : 47 + 4 = 51 ; Answer : 51"
    # the fields alone, as the Feedback artifact holds them: no feedback text at all
    fields = ParsedFeedback("incorrect", 3, None, None, flagged_step=2, quoted="42 - 5", recomputed=37)
    assert splice(response, fields) == ("Step 1 : 39 + 3 = 42 ; Step 2 : 42 - 5 = 37", False)
    assert splice(response, fields.__class__(**{**fields.__dict__, "quoted": "42 - 6"})) is None
    answer_line = ParsedFeedback("incorrect", 9, None, None, flagged_step=4, quoted=None, recomputed=41)
    wrong_line = "Step 1 : 39 + 3 = 42 ; Step 2 : 42 - 5 = 37 ; Step 3 : 37 + 4 = 41 ; Answer : 40"
    assert splice(wrong_line, answer_line) == (
        "Step 1 : 39 + 3 = 42 ; Step 2 : 42 - 5 = 37 ; Step 3 : 37 + 4 = 41 ; Answer : 41", True)
