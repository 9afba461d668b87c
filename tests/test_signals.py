"""Signals for pairs and filters: self-consistency (majority vote) and the critic's
score, through `build_pairs`; the AUC that measures how well a signal separates right
from wrong answers."""

from pathlib import Path

import polars as pl
import pytest

from honing.method.pairs import COMPUTED_SIGNALS, SIGNALS, PairsConfig, build_pairs, signal_value
from honing.method.prompts import PromptSet
from honing.method.signals import auc, majority_vote, self_consistency_values, vote_frame
from honing.tasks.families import load_tasks
from schemas.pairs import PreferencePairs

TEMPLATES = PromptSet(Path(__file__).parents[1] / "prompts" / "micro")
TASKS = load_tasks(["reference"])
PROMPTS = pl.DataFrame({"id": ["q1", "q2"], "prompt": ["question one", "question two"], "answer": [None, None],
                        "task": ["reference"] * 2, "metadata": [None] * 2})


def test_majority_vote():
    vote = majority_vote(["12", "12", "13", None, "12"])
    assert (vote.majority, vote.agreement, vote.samples) == ("12", 0.6, 5)  # a sample without an answer still counts
    assert majority_vote(["4", "5", "4", "5", "6"]).majority is None  # a tie for first: no majority
    assert majority_vote(["4", "5", "4", "5", "6"]).agreement == 0.0
    assert majority_vote([None, None]) == majority_vote([None, None]).__class__(None, 0.0, 2)
    assert majority_vote(["7"]).agreement == 1.0


def test_vote_frame_is_majority_vote_prompt_by_prompt():
    import random

    rng = random.Random(11)
    samples = [(f"q{q}", rng.choice(["4", "5", "6", None, None])) for q in range(300) for _ in range(rng.randint(1, 6))]
    samples += [("none", None), ("none", None), ("nulls-lead", None), ("nulls-lead", None), ("nulls-lead", "3")]
    votes = vote_frame(pl.DataFrame(samples, schema=["prompt_id", "final_answer"], orient="row"))
    assert votes.height == len({q for q, _ in samples})
    for prompt_id, majority, agreement, n in votes.iter_rows():
        expected = majority_vote([a for q, a in samples if q == prompt_id])
        assert (majority, agreement, n) == (expected.majority, expected.agreement, expected.samples), prompt_id


def refinements() -> pl.DataFrame:
    """q1: three samples; sample 2 said 13 and was refined to 12 (round 1). q2: a tie."""
    rows = [  # id, candidate, prompt, round, response, score
        ("q1:0@0", "q1:0", "q1", 0, "Answer : 12", 6),
        ("q1:1@0", "q1:1", "q1", 0, "the answer is 12", 9),
        ("q1:2@0", "q1:2", "q1", 0, "Answer : 13", 8),
        ("q1:2@1", "q1:2", "q1", 1, "so 12", 5),
        ("q2:0@0", "q2:0", "q2", 0, "Answer : 4", 7),
        ("q2:1@0", "q2:1", "q2", 0, "Answer : 5", 3),
    ]
    return pl.DataFrame({
        "id": [r[0] for r in rows], "candidate_id": [r[1] for r in rows], "prompt_id": [r[2] for r in rows],
        "prompt": ["question one" if r[2] == "q1" else "question two" for r in rows],
        "round": [r[3] for r in rows], "response": [r[4] for r in rows], "feedback": ["f"] * len(rows),
        "verdict": ["correct"] * len(rows), "score": [r[5] for r in rows],
    })


def test_self_consistency_votes_over_final_answers_and_values_every_round():
    values = self_consistency_values(refinements(), PROMPTS, TASKS)
    # the vote is 12, 12, 12 (sample 2's last round): q1's majority is 12; q2 (4 vs 5) has none
    assert values == {"q1:0@0": 1.0, "q1:1@0": 1.0, "q1:2@0": 0.0, "q1:2@1": 1.0, "q2:0@0": None, "q2:1@0": None}


def test_pairs_by_self_consistency_prefer_the_majority_answer():
    rows = refinements()
    cfg = PairsConfig(signal="self_consistency")
    pairs = build_pairs(rows, PROMPTS, TEMPLATES, cfg, "it1", tasks=TASKS,
                        values=self_consistency_values(rows, PROMPTS, TASKS))
    PreferencePairs.validate(pairs)
    assert pairs["prompt_id"].to_list() == ["q1"]  # q2 has no majority: no pair
    row = pairs.row(0, named=True)
    assert row["rejected"][0]["content"] == "Answer : 13"
    assert row["chosen"][0]["content"] in ("Answer : 12", "the answer is 12", "so 12")
    assert (row["chosen_score"], row["rejected_score"], row["margin"]) == (1.0, 0.0, 1.0)


def test_pairs_by_the_critic_score_take_the_highest_and_lowest_score():
    pairs = build_pairs(refinements(), PROMPTS, TEMPLATES, PairsConfig(signal="score", min_margin=2), "it1",
                        tasks=TASKS)
    by_prompt = {r["prompt_id"]: r for r in pairs.iter_rows(named=True)}
    assert by_prompt["q1"]["chosen"][0]["content"] == "the answer is 12"  # score 9
    assert by_prompt["q1"]["rejected"][0]["content"] == "so 12"  # score 5
    assert by_prompt["q2"]["margin"] == 4.0  # 7 vs 3
    # a margin above what the scores allow makes no pair
    assert build_pairs(refinements(), PROMPTS, TEMPLATES, PairsConfig(signal="score", min_margin=5), "it1",
                       tasks=TASKS).height == 0


def test_computed_signals_need_their_values():
    assert set(COMPUTED_SIGNALS) <= set(SIGNALS)
    for signal in COMPUTED_SIGNALS:
        with pytest.raises(ValueError, match=f"build_pairs.signal '{signal}' needs each answer's value"):
            build_pairs(refinements(), PROMPTS, TEMPLATES, PairsConfig(signal=signal), "it1", tasks=TASKS)
        assert signal_value(signal, True, 10, 0.25) == 0.25  # the computed value, not the rule or the score
    assert signal_value("rule", True, 3, 0.25) == 1.0


def test_auc():
    assert auc([3, 2, 1, 0], [True, True, False, False]) == 1.0
    assert auc([0, 1, 2, 3], [True, True, False, False]) == 0.0
    assert auc([1, 1, 1, 1], [True, False, True, False]) == 0.5  # ties count half
    assert auc([0.9, 0.2, 0.5, 0.4], [True, True, False, False]) == 0.5  # 0.9 beats both, 0.2 neither
    assert auc([1.0], [True]) is None


def test_the_build_pairs_stage_computes_self_consistency(tmp_path, monkeypatch):
    import stages.build_pairs as stage
    from honing.artifacts.io import write_artifact
    from schemas.prompts import Prompts
    from schemas.refinements import Refinements

    monkeypatch.chdir(tmp_path)  # the stage reads and writes real artifacts, as in the pipeline
    write_artifact(PROMPTS.with_columns(reference=pl.lit(None, pl.String), source=pl.lit("test"),
                                        split=pl.lit("train")), "data/prepare/train.parquet", Prompts)
    write_artifact(refinements().with_columns(
        **{c: pl.lit(None, pl.String) for c in ("weaknesses", "suggestions", "parse_error", "refinement", "quoted")},
        flagged_step=pl.lit(None, pl.Int64), recomputed=pl.lit(None, pl.Int64), model=pl.lit("m"),
        iteration=pl.lit("it1")), "data/it1/refine/refinements.parquet", Refinements)
    params = {"templates": str(TEMPLATES.folder), "iterations": {"it1": {"build_pairs": {}}},
              "build_pairs": {"signal": "self_consistency", "reward_model": None, "judge": None}}
    monkeypatch.setattr(stage, "load_params", lambda name, key: params)
    stage.run(["it1"])
    pairs = pl.read_parquet("data/it1/build_pairs/pairs.parquet")
    assert pairs["rejected"].to_list() == [[{"role": "assistant", "content": "Answer : 13"}]]
