from pathlib import Path

import polars as pl

from honing.method.pairs import PairsConfig, build_pairs
from honing.method.prompts import PromptSet
from honing.method.sft import (
    BuildSFTConfig,
    MetaRecordsConfig,
    iteration_records,
    meta_records,
)
from honing.tasks.families import load_tasks

TEMPLATES = PromptSet(Path(__file__).parents[1] / "prompts" / "micro")
PROMPTS = pl.DataFrame({"id": ["p1", "p2"], "prompt": ["q1", "q2"], "answer": ["7", "5"], "task": ["micro"] * 2,
                        "metadata": [None] * 2})
TASKS = load_tasks(["micro"])


def refinements():
    return pl.DataFrame({
        "id": ["p1:0@0", "p1:0@1", "p1:1@0", "p2:0@0", "p2:1@0"],
        "candidate_id": ["p1:0", "p1:0", "p1:1", "p2:0", "p2:1"],
        "prompt_id": ["p1", "p1", "p1", "p2", "p2"],
        "prompt": ["q1", "q1", "q1", "q2", "q2"],
        "round": [0, 1, 0, 0, 0],
        "response": ["Answer : 8", "Answer : 7", "Answer : 9", "Answer : 5", "Answer : 5"],
        "feedback": ["f"] * 5,
        "verdict": ["incorrect", "correct", "correct", "correct", "correct"],
        "score": [3, 10, 10, 10, 10],
    })


def test_pairs_chosen_best_rejected_worst_with_margin():
    pairs = build_pairs(refinements(), PROMPTS, TEMPLATES, PairsConfig(), "it1", tasks=TASKS)
    # p2 has only correct answers: no pair; p1: the refinement beats a wrong answer
    assert pairs["prompt_id"].to_list() == ["p1"]
    row = pairs.row(0, named=True)
    assert row["chosen"] == [{"role": "assistant", "content": "Answer : 7"}]
    assert row["rejected"][0]["content"] in ("Answer : 8", "Answer : 9")
    assert row["prompt"] == [{"role": "user", "content": "Problem : q1 Solution :"}]
    assert row["margin"] == 1.0


def test_pairs_margin_threshold():
    assert build_pairs(refinements(), PROMPTS, TEMPLATES, PairsConfig(min_margin=2.0), "it1", tasks=TASKS).height == 0
    by_score = build_pairs(refinements(), PROMPTS, TEMPLATES, PairsConfig(signal="score", min_margin=5), "it1",
                           tasks=TASKS)
    assert by_score["margin"].to_list() == [7.0]


def test_iteration_records_answers_and_agreeing_feedback():
    filtered = pl.DataFrame({
        "id": ["p1:0", "p1:1", "p2:0", "p2:1"], "prompt_id": ["p1", "p1", "p2", "p2"],
        "prompt": ["q1", "q1", "q2", "q2"], "response": ["Answer : 7", "Answer : 9", "Answer : 5", "Answer : 5"],
        "kept": [True, False, True, False], "correct": [True, False, True, True],
    })
    # the reference family has no step checker: self-feedback is kept where its verdict agrees
    # with the rule check (tests/test_critic_data.py covers a family with a checker)
    prompts = PROMPTS.with_columns(task=pl.lit("reference"))
    recs = iteration_records(filtered, refinements(), prompts, TEMPLATES, BuildSFTConfig(), "it1",
                             tasks=load_tasks(["reference"]))
    answers = recs.filter(pl.col("kind") == "answer")
    assert answers["source_id"].to_list() == ["p1:0", "p2:0"]
    feedback = recs.filter(pl.col("kind") == "feedback")
    # p1:1 answered 9 (wrong) but its feedback said correct: disagreeing, left out
    assert sorted(feedback["source_id"].to_list()) == ["p1:0@0", "p2:0@0", "p2:1@0"]
    assert feedback.row(0, named=True)["prompt"][0]["content"].endswith("Check :")


def test_meta_records_feedback_and_one_refinement_per_prompt():
    corpus = pl.DataFrame({
        "id": ["p1:0", "p1:1"], "prompt_id": ["p1", "p1"], "prompt": ["q1", "q1"],
        "response": ["Answer : 8", "Answer : 9"], "feedback": ["fa", "fb"], "verdict": ["incorrect"] * 2,
        "refinement": ["Answer : 7", "Answer : 7"],
    })
    recs = meta_records(corpus, TEMPLATES, MetaRecordsConfig())
    assert recs["kind"].to_list() == ["feedback", "refinement", "feedback"]
    assert recs.row(1, named=True)["completion"] == [{"role": "assistant", "content": "Answer : 7"}]
