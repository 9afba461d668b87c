"""evaluate: held-out accuracy directly and after each round of online self-refinement,
with a scripted policy and critic whose every outcome is known in advance.

Six prompts (reference answers 10..15), rewrite mode, two rounds:

    q0  right, judged correct                -> stays right
    q1  wrong, judged incorrect, rewritten right in round 1          (fixed)
    q2  right, judged incorrect (false alarm), rewritten wrong,
        then judged correct                  -> stays wrong          (broken)
    q3  wrong, judged correct (missed)       -> stays wrong
    q4  wrong, judged incorrect, rewritten wrong, then right in round 2 (fixed)
    q5  wrong, feedback unparseable          -> not refined
"""

from __future__ import annotations

import polars as pl
import pytest
from scripted import SRT, ScriptedCritic, ScriptedPolicy, policy_role, srt

from honing.method.evaluate import EvaluateConfig, evaluate, evaluation_metrics
from honing.method.refine import RefineConfig
from honing.tasks.families import load_tasks
from schemas.evaluation import EvaluationRows

QUESTIONS = [f"q{i}" for i in range(6)]
PROMPTS = pl.DataFrame({"id": [f"e{i}" for i in range(6)], "prompt": QUESTIONS,
                        "answer": [str(10 + i) for i in range(6)], "task": ["reference"] * 6,
                        "metadata": [None] * 6})
DIRECT = {"q0": "q0: Answer: 10", "q1": "q1: Answer: 12", "q2": "q2: Answer: 12", "q3": "q3: Answer: 0",
          "q4": "q4: Answer: 1", "q5": "q5: Answer: 3"}
REWRITES = {"q1: Answer: 12": "q1 again: Answer: 11", "q2: Answer: 12": "q2 again: Answer: 13",
            "q4: Answer: 1": "q4 again: Answer: 2", "q4 again: Answer: 2": "q4 third: Answer: 14"}
FEEDBACK = {"q0: Answer: 10": srt("correct", 9), "q1: Answer: 12": srt("incorrect", 3),
            "q2: Answer: 12": srt("incorrect", 4), "q3: Answer: 0": srt("correct", 8),
            "q4: Answer: 1": srt("incorrect", 2), "q5: Answer: 3": "No idea.",
            "q1 again: Answer: 11": srt("correct", 9), "q2 again: Answer: 13": srt("correct", 7),
            "q4 again: Answer: 2": srt("incorrect", 3), "q4 third: Answer: 14": srt("correct", 9)}


def run(rounds: int = 2):
    policy, critic = ScriptedPolicy(answers=DIRECT, rewrites=REWRITES), ScriptedCritic(FEEDBACK)
    cfg = EvaluateConfig(refine=RefineConfig(rounds=rounds, mode="rewrite"))
    rows, metrics = evaluate(PROMPTS, policy_role(policy), critic, SRT, cfg, "ck", tasks=load_tasks(["reference"]))
    return rows, metrics, policy, critic


def test_accuracy_per_round_fixed_broken_and_critic_figures():
    rows, metrics, _, _ = run()
    EvaluationRows.validate(rows)
    assert metrics == {
        "prompts": 6,
        "accuracy_direct": 0.3333,          # q0, q2
        "accuracy_refined": 0.5,            # q0, q1, q4
        "refinement_gain": 0.1667,
        "accuracy_per_round": [0.3333, 0.3333, 0.5],  # q1 fixed and q2 broken in round 1; q4 fixed in round 2
        "fixed": 2,                         # q1, q4
        "broken": 1,                        # q2
        "critic_recall_wrong": 0.5,         # of q1, q3, q4, q5 (wrong) it flagged q1, q4
        "critic_false_alarm_rate": 0.5,     # of q0, q2 (right) it flagged q2
        "unparsed_feedback": 1,             # q5
        "critic_score_auc": 0.8333,         # right q0 (9), q2 (4) over wrong q1 (3), q3 (8), q4 (2): 5 of 6 pairs
    }


def test_each_round_carries_every_prompts_latest_answer():
    rows, _, _, _ = run()
    latest = {(r["prompt_id"], r["round"]): r["response"] for r in rows.iter_rows(named=True)}
    assert rows.height == 6 * 3
    assert [latest[("e1", k)] for k in range(3)] == ["q1: Answer: 12", "q1 again: Answer: 11", "q1 again: Answer: 11"]
    assert [latest[("e4", k)] for k in range(3)] == ["q4: Answer: 1", "q4 again: Answer: 2", "q4 third: Answer: 14"]
    assert [latest[("e0", k)] for k in range(3)] == ["q0: Answer: 10"] * 3
    by_round = rows.filter(pl.col("prompt_id") == "e2").sort("round")
    assert by_round["correct"].to_list() == [True, False, False]
    assert by_round["verdict"].to_list() == ["incorrect", "correct", "correct"]


def test_online_refinement_stops_early_for_what_the_critic_calls_correct():
    _, _, policy, critic = run()
    # 6 direct answers; round 1 rewrites the three judged incorrect; round 2 only q4's
    assert len(policy.requests) == 6 + 3 + 1
    assert critic.asked[1:] == [["q1 again: Answer: 11", "q2 again: Answer: 13", "q4 again: Answer: 2"],
                                ["q4 third: Answer: 14"]]


def test_one_round_measures_after_one_round():
    _, metrics, policy, _ = run(rounds=1)
    assert metrics["accuracy_per_round"] == [0.3333, 0.3333]
    assert (metrics["fixed"], metrics["broken"]) == (1, 1)
    assert len(policy.requests) == 6 + 3


@pytest.mark.parametrize("verdicts, correct, recall, false_alarm", [
    (["incorrect"] * 4, [False, False, True, True], 1.0, 1.0),   # flags everything
    (["correct"] * 4, [False, False, True, True], 0.0, 0.0),     # flags nothing
    (["incorrect", "correct", "correct", "incorrect"], [False, False, True, True], 0.5, 0.5),
    (["correct"] * 4, [True] * 4, 0.0, 0.0),                      # nothing wrong: recall has no denominator
])
def test_critic_recall_and_false_alarms_are_counted_on_the_direct_answers(verdicts, correct, recall, false_alarm):
    frame = pl.DataFrame({"id": [f"e{i}@0" for i in range(4)], "prompt_id": [f"e{i}" for i in range(4)],
                          "round": [0] * 4, "response": ["r"] * 4, "verdict": verdicts, "correct": correct,
                          "model": ["m"] * 4, "iteration": ["ck"] * 4})
    metrics = evaluation_metrics(frame, 0)
    assert (metrics["critic_recall_wrong"], metrics["critic_false_alarm_rate"]) == (recall, false_alarm)


@pytest.mark.parametrize(("scores", "correct", "expected"), [
    ([9, 8, 2, 1], [True, True, False, False], 1.0),     # every right answer scored above every wrong one
    ([1, 2, 8, 9], [True, True, False, False], 0.0),     # the reverse
    ([5, 5, 5, 5], [True, False, True, False], 0.5),     # one score for all: ties count half
    ([9, 3, 7, None], [True, False, False, True], 1.0),   # the unscored right answer is left out
    ([6, 3, 7, 2], [True, False, False, True], 0.25),     # 6 beats 3, not 7; 2 beats neither: 1 of 4
    ([9, 8, None, None], [True, True, False, False], None),  # no scored wrong answer: undefined
])
def test_the_critic_score_auc_separates_right_from_wrong_direct_answers(scores, correct, expected):
    frame = pl.DataFrame({"id": [f"e{i}@0" for i in range(4)], "prompt_id": [f"e{i}" for i in range(4)],
                          "round": [0] * 4, "response": ["r"] * 4, "verdict": ["correct"] * 4, "score": scores,
                          "correct": correct, "model": ["m"] * 4, "iteration": ["ck"] * 4},
                         schema_overrides={"score": pl.Int64})
    assert evaluation_metrics(frame, 0)["critic_score_auc"] == expected
