from dataclasses import replace

import polars as pl
import pytest
from scripted import MICRO, SRT, ScriptedCritic, ScriptedPolicy, policy_role, round0, rounds_of, srt

from honing.method.critique import RuleCritic, feedback_frame
from honing.method.feedback import ParsedFeedback, unparsed
from honing.method.filters import final_answers
from honing.method.refine import RefineConfig, refine_rounds
from honing.micro import oracle, world
from honing.tasks import micro
from honing.tasks.micro import corrected_prefix, parse_check, splice
from schemas.refinements import Refinements

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
    rows = pl.DataFrame({"candidate_id": ["a", "a", "b"], "round": [0, 1, 0], "response": ["x", "y", "z"]})
    out = final_answers(rows).sort("candidate_id")
    assert out["response"].to_list() == ["y", "z"]


@pytest.mark.parametrize("case", ["chains in order", "a chain without round 0", "rows shuffled",
                                  "a round repeated", "candidates out of order"])
def test_final_rounds_are_the_last_round_of_each_candidate_in_first_round_order(case):
    import random

    from honing.method.signals import final_rounds

    rng = random.Random(7)
    rows = [(f"c{c:03d}", r, f"text {c}.{r}") for c in range(60) for r in range(rng.randint(1, 3))]
    if case == "a chain without round 0":
        rows = [row for row in rows if not (row[0] in ("c010", "c031") and row[1] == 0)]
    elif case == "rows shuffled":
        rng.shuffle(rows)
    elif case == "a round repeated":
        rows.insert(5, (rows[4][0], rows[4][1], "again"))
    elif case == "candidates out of order":
        rows = rows[40:] + rows[:40]
    frame = pl.DataFrame(rows, schema=["candidate_id", "round", "response"], orient="row").with_row_index("position")
    definition = frame.sort("round", maintain_order=True).group_by("candidate_id", maintain_order=True).last()
    assert final_rounds(frame).equals(definition)
    first = frame.group_by("candidate_id").agg(first=pl.col("round").min())
    assert final_rounds(frame, first_round="first").equals(
        definition.join(first, on="candidate_id", how="left", maintain_order="left"))


def test_splice_marks_a_fixed_answer_line_as_complete():
    wrong_step = "Step 1 : 39 + 3 = 42 ; Step 2 : 42 - 5 = 47 ; Step 3 : 47 + 4 = 51 ; Answer : 51"
    wrong_line = "Step 1 : 39 + 3 = 42 ; Step 2 : 42 - 5 = 37 ; Step 3 : 37 + 4 = 41 ; Answer : 40"
    assert splice(wrong_step, fb_for(wrong_step)) == ("Step 1 : 39 + 3 = 42 ; Step 2 : 42 - 5 = 37", False)
    assert splice(wrong_line, fb_for(wrong_line)).complete
    assert splice(wrong_step, unparsed("x")) is None


def test_splice_reads_the_structured_fields_not_the_text():
    response = "Step 1 : 39 + 3 = 42 ; Step 2 : 42 - 5 = 47 ; Step 3 : 47 + 4 = 51 ; Answer : 51"
    # the fields alone, as the Feedback artifact holds them: no feedback text at all
    fields = ParsedFeedback("incorrect", 3, None, None, flagged_step=2, quoted="42 - 5", recomputed=37)
    assert splice(response, fields) == ("Step 1 : 39 + 3 = 42 ; Step 2 : 42 - 5 = 37", False)
    assert splice(response, replace(fields, quoted="42 - 6")) is None
    answer_line = ParsedFeedback("incorrect", 9, None, None, flagged_step=4, quoted=None, recomputed=41)
    wrong_line = "Step 1 : 39 + 3 = 42 ; Step 2 : 42 - 5 = 37 ; Step 3 : 37 + 4 = 41 ; Answer : 40"
    assert splice(wrong_line, answer_line) == (
        "Step 1 : 39 + 3 = 42 ; Step 2 : 42 - 5 = 37 ; Step 3 : 37 + 4 = 41 ; Answer : 41", True)


# ---------------------------------------------------------------- refine_rounds, scripted


def self_refine_script():
    """Four candidates: c0 is fixed in round 1 (then stops), c1 is judged right (never
    refined), c2 stays wrong for every round, c3's feedback does not parse (not refined)."""
    critic = ScriptedCritic({"A0": srt("incorrect", 3), "A1": srt("correct", 9), "B0": srt("correct", 8),
                             "C0": srt("incorrect", 2), "C1": srt("incorrect", 3), "C2": srt("incorrect", 4),
                             "C3": srt("incorrect", 5), "D0": "Looks fine to me."})
    policy = ScriptedPolicy(rewrites={"A0": "A1", "C0": "C1", "C1": "C2", "C2": "C3"})
    return policy, critic


def test_self_refine_refines_only_what_the_critic_calls_incorrect_and_stops_early():
    policy, critic = self_refine_script()
    feedback = round0({"q0": "A0", "q1": "B0", "q2": "C0", "q3": "D0"}, critic)
    out = refine_rounds(feedback, policy_role(policy), critic, SRT, RefineConfig(rounds=3, mode="rewrite"), "it1")
    Refinements.validate(out)
    assert rounds_of(out) == {"c0": ["A0", "A1"], "c1": ["B0"], "c2": ["C0", "C1", "C2", "C3"], "c3": ["D0"]}
    # one rewrite request per answer still judged incorrect, round by round: 2, then 1, then 1
    assert critic.asked[1:] == [["A1", "C1"], ["C2"], ["C3"]]
    assert len(policy.requests) == 4
    # each round's row carries its own feedback, parsed: score and verdict of that round
    c2 = out.filter(pl.col("candidate_id") == "c2").sort("round")
    assert c2["score"].to_list() == [2, 3, 4, 5] and c2["id"].to_list() == ["c2@0", "c2@1", "c2@2", "c2@3"]
    assert out.filter(pl.col("id") == "c3@0")["parse_error"].item().startswith("none of the fields")
    # the rewrite prompt holds the previous answer and the critic's text on it, as written
    first = policy.requests[0].messages[0]["content"]
    assert "Your previous answer:\nA0\n" in first and "Verdict: incorrect" in first


def test_rounds_stop_when_nothing_is_left_to_refine():
    critic = ScriptedCritic({"A0": srt("incorrect", 3), "A1": srt("correct", 9)})
    policy = ScriptedPolicy(rewrites={"A0": "A1"})
    out = refine_rounds(round0({"q0": "A0"}, critic), policy_role(policy), critic, SRT,
                        RefineConfig(rounds=5, mode="rewrite"), "it1")
    assert out["round"].to_list() == [0, 1] and len(critic.asked) == 2 and len(policy.requests) == 1


def test_critic_mode_takes_the_critics_refinement_and_calls_no_policy():
    critic = ScriptedCritic({"A0": srt("incorrect", 3, refinement="A1"), "A1": srt("correct", 9, refinement="A1"),
                             "B0": srt("correct", 8, refinement="B0"), "C0": srt("incorrect", 2)})
    policy = ScriptedPolicy()
    feedback = round0({"q0": "A0", "q1": "B0", "q2": "C0"}, critic)
    assert feedback["refinement"].to_list() == ["A1", "B0", None]  # parsed once, kept as a column
    out = refine_rounds(feedback, policy_role(policy), critic, SRT, RefineConfig(rounds=2, mode="critic"), "it1")
    # c2's critic wrote no refinement: nothing to take, so it stops at round 0
    assert rounds_of(out) == {"c0": ["A0", "A1"], "c1": ["B0"], "c2": ["C0"]}
    assert policy.requests == []


def micro_round0(responses):

    critic = RuleCritic(micro.check)
    candidates = pl.DataFrame({"id": [f"c{i}" for i in range(len(responses))], "prompt_id": ["p"] * len(responses),
                               "prompt": [P.text] * len(responses), "response": responses})
    return critic, feedback_frame(candidates, critic, "it1").with_columns(prompt=candidates["prompt"])


WRONG_STEP = "Step 1 : 39 + 3 = 42 ; Step 2 : 42 - 5 = 47 ; Step 3 : 47 + 4 = 51 ; Answer : 51"
WRONG_LINE = "Step 1 : 39 + 3 = 42 ; Step 2 : 42 - 5 = 37 ; Step 3 : 37 + 4 = 41 ; Answer : 40"
PREFIX = "Step 1 : 39 + 3 = 42 ; Step 2 : 42 - 5 = 37"


def test_continue_mode_splices_the_recomputed_value_and_continues_from_there():
    gold = world.gold_solution(P)
    critic, feedback = micro_round0([WRONG_STEP, WRONG_LINE, gold])
    assert feedback.select("flagged_step", "quoted", "recomputed").rows() == [(2, "42 - 5", 37), (4, None, 41),
                                                                             (None, None, None)]
    policy = ScriptedPolicy(continuations={PREFIX: "; Step 3 : 37 + 4 = 41 ; Answer : 41"})
    out = refine_rounds(feedback, policy_role(policy), critic, MICRO, RefineConfig(rounds=2), "it1",
                        splice=micro.splice)
    assert rounds_of(out) == {"c0": [WRONG_STEP, gold], "c1": [WRONG_LINE, gold], "c2": [gold]}
    assert out.filter(pl.col("round") == 1)["verdict"].to_list() == ["correct", "correct"]
    # one model call: c0 continues from its spliced prefix; c1's fixed answer line is whole already
    (request,) = policy.requests
    assert request.continue_final_message
    assert [m["content"] for m in request.messages] == [MICRO.answer(P.text), PREFIX]


def test_continue_mode_reads_the_parsed_fields_not_the_feedback_text():
    critic, feedback = micro_round0([WRONG_STEP])
    policy = ScriptedPolicy(continuations={PREFIX: "; Step 3 : 37 + 4 = 41 ; Answer : 41"})
    # the text made unreadable: the fields still say step 2, 42 - 5, 37, so the splice happens
    unreadable = feedback.with_columns(feedback=pl.lit("(unreadable)"))
    out = refine_rounds(unreadable, policy_role(policy), critic, MICRO, RefineConfig(), "it1", splice=micro.splice)
    assert rounds_of(out)["c0"][-1] == world.gold_solution(P)
    # and fields that quote other operands than the answer wrote: no splice, whatever the text says
    other = feedback.with_columns(quoted=pl.lit("42 - 6"))
    out = refine_rounds(other, policy_role(policy), critic, MICRO, RefineConfig(), "it1", splice=micro.splice)
    assert rounds_of(out) == {"c0": [WRONG_STEP]} and len(policy.requests) == 1
