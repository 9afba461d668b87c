import random
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


def test_pairs_of_prompts_in_runs_and_of_prompts_interleaved_are_the_same():
    rng = random.Random(3)
    rows, prompt_rows = [], []
    for p in range(40):  # answers 0..3 to "1 + 1", each prompt's rows in candidate order, some repeated
        prompt_rows.append({"id": f"p{p:02d}", "prompt": f"q{p}", "answer": "2", "task": "micro", "metadata": None})
        for k in range(rng.randrange(1, 7)):
            rows.append({"id": f"p{p:02d}:{k}@0", "candidate_id": f"p{p:02d}:{k}", "prompt_id": f"p{p:02d}",
                         "prompt": f"q{p}", "round": 0, "response": f"Answer : {rng.randrange(4)}", "feedback": "f",
                         "verdict": "correct", "score": rng.randrange(1, 11)})
    in_runs = pl.DataFrame(rows)
    # the same rows with prompts interleaved, each prompt's rows still in their order
    interleaved = in_runs.with_columns(_key=pl.int_range(pl.len()).over("prompt_id") * 1000
                                       + pl.col("prompt_id").str.slice(1).cast(pl.Int64)).sort("_key").drop("_key")
    assert not interleaved.get_column("prompt_id").is_sorted()
    for cfg in (PairsConfig(), PairsConfig(signal="score", min_margin=1, max_pairs_per_prompt=2)):
        by_runs, by_window = (build_pairs(rows, pl.DataFrame(prompt_rows), TEMPLATES, cfg, "it1", tasks=TASKS)
                              for rows in (in_runs, interleaved))
        assert by_runs.height > 10
        assert by_runs.sort("id").equals(by_window.sort("id"))
        assert set(by_runs.get_column("id").to_list()) == _pairs_by_hand(rows, cfg)


def _pairs_by_hand(rows: list[dict], cfg: PairsConfig) -> set[str]:
    """best_worst's pair ids, prompt by prompt in Python (the critic's score as signal;
    the rule check where `signal` is rule: "Answer : 2" is right)."""
    out = set()
    for prompt in sorted({r["prompt_id"] for r in rows}):
        last = {r["response"]: r for r in rows if r["prompt_id"] == prompt}  # a response counts once: its last row
        value = {r["id"]: float(r["score"] if cfg.signal == "score" else r["response"] == "Answer : 2")
                 for r in last.values()}
        ranked = sorted(value, key=lambda i: (-value[i], i))
        for k in range(min(cfg.max_pairs_per_prompt, len(ranked) // 2)):
            chosen, rejected = ranked[k], ranked[-1 - k]
            margin = value[chosen] - value[rejected]
            if margin >= cfg.min_margin and margin > 0:
                out.add(f"{chosen}>{rejected}")
    return out


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
