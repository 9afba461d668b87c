import polars as pl

from honing.method.filters import FilterConfig, filter_answers, filter_metrics
from honing.tasks.families import load_tasks
from honing.tasks.reference import extract_answer, rule_correct


def test_extract_answer():
    assert extract_answer("Step 1 : 3 + 4 = 7 ; Answer : 7") == "7"
    assert extract_answer("so the total is 12 apples, then 15.") == "15"
    assert extract_answer("no numbers") is None
    assert rule_correct("Answer : 7", "7") is True
    assert rule_correct("Answer : 8", "7") is False
    assert rule_correct("Answer : 8", None) is None
    # GSM8K-style references and thousands separators
    assert rule_correct("so she earns 1,200 dollars.", "48 * 25 = 1200 #### 1200") is True
    assert rule_correct("Answer : 1199", "#### 1,200") is False


def finals():
    return pl.DataFrame({
        "candidate_id": ["p1:0", "p1:1", "p1:2", "p2:0", "p3:0"],
        "prompt_id": ["p1", "p1", "p1", "p2", "p3"],
        "prompt": ["q1", "q1", "q1", "q2", "q3"],
        "response": ["Answer : 7", "Answer : 7", "Answer : 8", "Answer : 5", "Answer : 1"],
        "round": [0, 1, 0, 0, 0],
        "verdict": ["correct", "correct", "incorrect", "correct", "correct"],
        "score": [10, 10, 3, 4, 10],
    })


PROMPTS = pl.DataFrame({"id": ["p1", "p2", "p3"], "answer": ["7", "5", None], "task": ["reference"] * 3,
                        "metadata": [None] * 3})
TASKS = load_tasks(["reference"])


def test_every_row_is_kept_with_a_reason():
    out = filter_answers(finals(), PROMPTS, FilterConfig(min_score=5), "it1", tasks=TASKS)
    assert out.height == 5
    reasons = dict(zip(out["id"].to_list(), out["reason"].to_list(), strict=True))
    assert reasons["p1:0"] is None
    assert reasons["p1:1"].startswith("duplicate:")
    assert reasons["p1:2"].startswith("incorrect: final answer '8'")
    assert reasons["p2:0"] == "score: feedback score 4 below 5"
    assert reasons["p3:0"] is None  # no reference: not checked unless required
    assert out.filter(pl.col("id") == "p3:0")["correct"].to_list() == [None]
    m = filter_metrics(out)
    assert (m["kept"], m["dropped"]) == (2, 3)
    assert m["dropped_by_rule"] == {"duplicate": 1, "incorrect": 1, "score": 1}


def test_require_reference_drops_unreferenced_prompts():
    out = filter_answers(finals(), PROMPTS, FilterConfig(require_reference=True), "it1", tasks=TASKS)
    assert out.filter(pl.col("id") == "p3:0")["reason"].to_list() == [
        "no_reference: the prompt has no reference answer"]
