import polars as pl
import pytest

from honing.method.filters import RULES, FilterConfig, filter_answers, filter_metrics
from honing.tasks.families import load_tasks
from honing.tasks.reference import extract_answer, rule_correct
from schemas.filtered import Filtered


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
        "id": ["p1:0@0", "p1:1@1", "p1:2@0", "p2:0@0", "p3:0@0"],
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
    cfg = FilterConfig(min_score=5)
    out = filter_answers(finals(), PROMPTS, cfg, "it1", tasks=TASKS)
    Filtered.validate(out)
    assert out.height == 5
    reasons = dict(zip(out["id"].to_list(), out["reason"].to_list(), strict=True))
    assert reasons["p1:0"] is None
    assert reasons["p1:1"].startswith("duplicate:")
    assert reasons["p1:2"].startswith("incorrect: final answer '8'")
    assert reasons["p2:0"] == "score: feedback score 4 below 5"
    assert reasons["p3:0"] is None  # no reference: not checked unless required
    assert out.filter(pl.col("id") == "p3:0")["correct"].to_list() == [None]
    m = filter_metrics(out, cfg)
    assert (m["kept"], m["dropped"]) == (2, 3)
    assert m["dropped_by_rule"] == {"duplicate": 1, "incorrect": 1, "score": 1}
    # each rule checks what the rules before it kept: 5 -> incorrect -> 4 -> score -> 3 -> length -> 3 -> duplicate
    assert m["rules"] == {
        "incorrect": {"checked": 5, "kept": 4, "dropped": 1},
        "score": {"checked": 4, "kept": 3, "dropped": 1},
        "length": {"checked": 3, "kept": 3, "dropped": 0},
        "duplicate": {"checked": 3, "kept": 2, "dropped": 1},
    }


def test_the_score_threshold_keeps_scores_at_or_above_it_and_drops_missing_scores():
    rows = finals().with_columns(score=pl.Series([5, 6, 3, 4, None], dtype=pl.Int64))
    out = filter_answers(rows, PROMPTS, FilterConfig(require_correct=False, min_score=5, dedupe=False), "it1",
                         tasks=TASKS)
    assert out["kept"].to_list() == [True, True, False, False, False]
    assert out["reason"].to_list()[4] == "score: feedback score None below 5"
    assert filter_answers(rows, PROMPTS, FilterConfig(require_correct=False, dedupe=False), "it1",
                          tasks=TASKS)["kept"].all()  # min_score 0: off


def test_require_reference_drops_unreferenced_prompts():
    out = filter_answers(finals(), PROMPTS, FilterConfig(require_reference=True), "it1", tasks=TASKS)
    assert out.filter(pl.col("id") == "p3:0")["reason"].to_list() == [
        "no_reference: the prompt has no reference answer"]


# ---- self-consistency: prompts without references --------------------------------------

UNREFERENCED = pl.DataFrame({"id": ["q1", "q2", "q3"], "answer": [None] * 3, "task": ["reference"] * 3,
                             "metadata": [None] * 3})


def samples(responses: dict[str, list[str]]) -> pl.DataFrame:
    rows = [(f"{pid}:{k}", pid, response) for pid, rs in responses.items() for k, response in enumerate(rs)]
    return pl.DataFrame({
        "id": [f"{cid}@0" for cid, _, _ in rows], "candidate_id": [cid for cid, _, _ in rows],
        "prompt_id": [pid for _, pid, _ in rows], "prompt": [f"question {pid}" for _, pid, _ in rows],
        "response": [r for _, _, r in rows], "round": [0] * len(rows), "verdict": ["correct"] * len(rows),
        "score": [None] * len(rows),
    }, schema_overrides={"score": pl.Int64})


SAMPLES = {
    "q1": ["so 12", "it is 12", "Answer : 12", "maybe 13", "no idea"],  # 3 of 5 say 12
    "q2": ["4", "5", "4", "5"],  # a tie: no majority
    "q3": ["9", "9", "9", "2"],  # 3 of 4 say 9
}


def test_agreement_and_majority_are_columns_of_every_row():
    out = filter_answers(samples(SAMPLES), UNREFERENCED, FilterConfig(dedupe=False), "it1", tasks=TASKS)
    Filtered.validate(out)
    assert out["kept"].all()  # the rule is off by default; the columns are always there
    assert out["final_answer"].to_list() == ["12", "12", "12", "13", None, "4", "5", "4", "5", "9", "9", "9", "2"]
    assert out["majority"].to_list() == ["12"] * 5 + [None] * 4 + ["9"] * 4
    assert out["agreement"].to_list() == [0.6] * 5 + [0.0] * 4 + [0.75] * 4
    assert out["reward"].null_count() == out.height


def test_self_consistency_keeps_majority_answers_that_reach_the_minimum_agreement():
    cfg = FilterConfig(self_consistency=True, min_agreement=0.7, dedupe=False)
    out = filter_answers(samples(SAMPLES), UNREFERENCED, cfg, "it1", tasks=TASKS)
    kept = out.filter(pl.col("kept"))
    assert kept["id"].to_list() == ["q3:0", "q3:1", "q3:2"]  # q1's majority has 0.6 < 0.7; q2 has none
    reasons = dict(zip(out["id"].to_list(), out["reason"].to_list(), strict=True))
    assert reasons["q1:0"] == "self_consistency: agreement 0.6000 below 0.7"
    assert reasons["q1:3"] == "self_consistency: final answer '13' is not the majority's '12'"
    assert reasons["q1:4"] == "self_consistency: final answer None is not the majority's '12'"
    assert reasons["q2:0"] == "self_consistency: no majority answer among the prompt's 4 samples"
    assert reasons["q3:3"] == "self_consistency: final answer '2' is not the majority's '9'"
    m = filter_metrics(out, cfg)
    assert m["rules"]["self_consistency"] == {"checked": 13, "kept": 3, "dropped": 10}
    assert m["self_consistency"] == {"prompts": 3, "with_majority": 2, "mean_agreement": 0.45,
                                     "majority_correct_rate": None}  # no reference to tell
    # without a minimum agreement, every majority answer is kept
    loose = filter_answers(samples(SAMPLES), UNREFERENCED, FilterConfig(self_consistency=True, dedupe=False),
                           "it1", tasks=TASKS)
    assert loose.filter(pl.col("kept"))["id"].to_list() == ["q1:0", "q1:1", "q1:2", "q3:0", "q3:1", "q3:2"]


def test_self_consistency_metrics_measure_the_majority_against_references():
    referenced = UNREFERENCED.with_columns(answer=pl.Series(["12", "4", "2"]))
    out = filter_answers(samples(SAMPLES), referenced, FilterConfig(require_correct=False, dedupe=False), "it1",
                         tasks=TASKS)
    # q1's majority 12 is right, q3's majority 9 is wrong, q2 has none
    assert filter_metrics(out, FilterConfig())["self_consistency"]["majority_correct_rate"] == 0.5


def test_min_agreement_must_be_a_share():
    with pytest.raises(ValueError, match=r"min_agreement must be a share of samples in \[0, 1\], found 1.5"):
        FilterConfig(min_agreement=1.5)


# ---- reward threshold -------------------------------------------------------------------


def test_the_reward_threshold_drops_answers_below_it_and_reports_separation():
    rows = finals()
    rewards = dict(zip(rows["id"].to_list(), [2.0, 1.5, -1.0, 0.5, -0.2], strict=True))
    cfg = FilterConfig(require_correct=False, min_reward=0.0, dedupe=False)
    out = filter_answers(rows, PROMPTS, cfg, "it1", tasks=TASKS, rewards=rewards)
    assert out["reward"].to_list() == [2.0, 1.5, -1.0, 0.5, -0.2]
    assert out["kept"].to_list() == [True, True, False, True, False]
    assert out["reason"].to_list()[2] == "reward: reward -1.0000 below 0.0"
    m = filter_metrics(out, cfg)
    assert m["rules"]["reward"] == {"checked": 5, "kept": 3, "dropped": 2}
    # correct answers (7, 7, 5) all score above the wrong one (8): perfect separation
    assert m["reward"] == {"mean": 0.56, "auc": 1.0}


def test_a_reward_threshold_without_rewards_is_an_error():
    with pytest.raises(ValueError, match="min_reward is set but no reward model scored the answers"):
        filter_answers(finals(), PROMPTS, FilterConfig(min_reward=0.0), "it1", tasks=TASKS)


def test_rules_are_listed_in_the_order_they_apply():
    everything = FilterConfig(require_reference=True, min_score=3, min_reward=0.0, self_consistency=True)
    assert everything.rules() == list(RULES)
    assert FilterConfig(require_correct=False, dedupe=False).rules() == ["length"]


def test_the_stage_takes_the_reward_threshold_only_beside_its_model(monkeypatch):
    import stages.filter as stage
    from stages._params import StageError

    params = {"iterations": {"it1": {"filter": {}}}, "filter": {"min_reward": 0.5, "reward_model": None}}
    monkeypatch.setattr(stage, "load_params", lambda name, key: params)
    with pytest.raises(StageError, match=r"`filter.min_reward`: the threshold goes with its model, "
                                         r"`filter.reward_model: \{model: ..., min_reward: ...\}`"):
        stage.run(["it1"])


def test_a_dropped_answer_s_reason_quotes_it_as_python_repr_does():
    """The reason text quotes answers in polars where repr only adds quotes, by Python
    elsewhere: quotes, backslashes, tabs and non-ASCII must read as repr writes them."""
    odd = ["it's", 'say "hi"', "x'\"y", "a\\b", "tab\t7", "é", "٣", "\x7f", " 12 ", "~{[]}", ""]
    frame = finals().head(1)
    frame = pl.concat([frame.with_columns(id=pl.lit(f"p1:{i}@0"), candidate_id=pl.lit(f"p1:{i}"),
                                          response=pl.lit(f"Answer : {text}")) for i, text in enumerate(odd)])
    out = filter_answers(frame, PROMPTS, FilterConfig(), "it1", tasks=TASKS)
    for row in out.iter_rows(named=True):
        if row["correct"] is False:
            read = extract_answer(row["response"])
            assert row["reason"] == f"incorrect: final answer {read!r} does not match the reference '7'"
    assert out.get_column("correct").eq(False).sum() >= 8


def test_a_duplicate_is_the_second_passing_copy_not_a_copy_after_a_dropped_one():
    """The same response to the same prompt: a copy that failed another rule first does
    not make the first passing copy a duplicate; the next passing copy is one."""
    frame = pl.concat([finals().head(1).with_columns(id=pl.lit(f"p1:{i}@0"), candidate_id=pl.lit(f"p1:{i}"),
                                                      score=pl.lit(score)) for i, score in enumerate([2, 9, 9])])
    out = filter_answers(frame, PROMPTS, FilterConfig(min_score=5), "it1", tasks=TASKS)
    assert out.get_column("kept").to_list() == [False, True, False]
    assert out.get_column("reason")[0].startswith("score:")
    assert out.get_column("reason")[2].startswith("duplicate:")
