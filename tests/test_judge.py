"""The pairwise LLM judge (honing.method.judge): its prompt and reply parser, the
both-orders rule, and scripted judges served by the loopback OpenAI-compatible server:
a position-biased judge is measured as biased and its flips count as ties; a
consistent judge gives the right win rate against reference answers; unparseable
replies are ties with their reason counted; the judge as a pair signal; the evaluate
stage's glue with the pool's references and with a reference model's answers."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest

from honing.calls.roles import Role
from honing.calls.server import ChatServer
from honing.method.judge import (
    Judge,
    Judgement,
    combine,
    judge_evaluation,
    judge_metrics,
    judge_values,
    parse_judgement,
    pool_references,
)
from honing.method.pairs import PairsConfig, build_pairs
from honing.method.prompts import PromptSet
from honing.tasks.families import load_tasks
from schemas.judgements import Judgements
from schemas.pairs import PreferencePairs

SRT = PromptSet(Path(__file__).parents[1] / "prompts" / "srt")


def test_the_judge_prompt_shows_the_question_and_both_answers():
    assert SRT.judge("What is 2 + 3?", "It is 5.", "Six.") == (
        "You are an impartial judge. Two assistants answered the question below. Decide which answer is "
        "better: correct first, then helpful, clear and concise. The order in which the answers are shown "
        "and their length must not influence you.\n\n"
        "Question:\nWhat is 2 + 3?\n\n"
        "Answer A:\nIt is 5.\n\n"
        "Answer B:\nSix.\n\n"
        'Compare them briefly, then give your decision on a last line of its own: "Winner: A", "Winner: B" '
        'or "Winner: tie".')


@pytest.mark.parametrize(("reply", "parsed"), [
    ("Winner: A", ("A", None)),
    ("A is more precise.\nwinner: b", ("B", None)),
    ("**Winner:** tie", ("tie", None)),
    ("Winner: Answer A.", ("A", None)),
    ("Winner: A\nOn reflection...\nWinner: B", ("B", None)),  # the last line decides
    ("Winner: C", (None, "winner 'C' is not A, B or tie")),
    ("Winner: both are fine", (None, "winner 'both are fine' is not A, B or tie")),
    ("I prefer the first answer.", (None, "no 'Winner:' line")),
    ("The winner is A", (None, "no 'Winner:' line")),
    ("   ", (None, "empty reply")),
])
def test_parse_judgement(reply, parsed):
    assert parse_judgement(reply) == parsed


def test_the_two_orders_make_one_outcome():
    assert combine("a", "a") == Judgement("a", "a", "a", None)
    assert combine("b", "b").outcome == "b"
    assert combine("tie", "tie") == Judgement("tie", "tie", "tie", "judged_tie")
    assert combine("a", "b") == Judgement("a", "b", "tie", "orders_disagree")  # followed position
    assert combine("a", "tie").tie_cause == "orders_disagree"
    assert combine("unparsed", "a", ("no 'Winner:' line",)) == Judgement("unparsed", "a", "tie", "unparsed",
                                                                         ("no 'Winner:' line",))


# ---- scripted judges over the loopback server -------------------------------------------

QUESTIONS = {f"q{i}": f"What is {i} + {i}?" for i in range(10)}
RIGHT = {q: str(2 * i) for i, q in enumerate(QUESTIONS)}
_SHOWN = re.compile(r"Question:\n(.*?)\n\nAnswer A:\n(.*?)\n\nAnswer B:\n(.*?)\n\nCompare them", re.DOTALL)


def shown(messages: list[dict]) -> tuple[str, str, str]:
    """(question, answer A, answer B) from the judge prompt."""
    return _SHOWN.search(messages[-1]["content"]).groups()


def right(question: str, answer: str) -> bool:
    n = int(question.split()[2])
    return answer.endswith(f"Answer: {2 * n}")


def consistent(messages: list[dict]) -> str:
    """Prefers the right answer; a tie when both or neither are right. Order-blind."""
    question, a, b = shown(messages)
    ra, rb = right(question, a), right(question, b)
    return "Both look similar.\nWinner: tie" if ra == rb else f"Compared.\nWinner: {'A' if ra else 'B'}"


def first_shown(messages: list[dict]) -> str:
    return "The first one reads better.\nWinner: A"


def half_biased(messages: list[dict]) -> str:
    """Right when exactly one answer is right; otherwise it picks whatever is shown first."""
    question, a, b = shown(messages)
    ra, rb = right(question, a), right(question, b)
    return f"Winner: {'A' if ra or ra == rb else 'B'}"


def served_judge(server: ChatServer) -> Judge:
    role = Role.from_params("judge", {"backend": "openai", "model": server.model, "base_url": server.url,
                                      "cache": False, "max_retries": 0, "timeout": 30})
    return Judge(role, SRT, max_tokens=64)


def evaluation_case() -> tuple[pl.DataFrame, pl.DataFrame]:
    """10 prompts, each with a direct answer (round 0) and a refined one (round 1), and a
    reference answer in the pool. Direct: q0-q3 right where the reference is wrong (wins),
    q4-q6 right like the reference but worded otherwise (ties), q7-q8 wrong against a right
    reference (losses), q9 the reference's own text (a tie, not asked). Refined: all right."""
    refs, direct = {}, {}
    for i, q in enumerate(QUESTIONS):
        good, bad = f"Adding.\nAnswer: {2 * i}", f"Adding.\nAnswer: {2 * i + 1}"
        refs[q] = bad if i < 4 else good
        direct[q] = good if i < 7 else bad
        if 4 <= i < 7:
            direct[q] = f"{i} and {i} make {2 * i}.\nAnswer: {2 * i}"
    direct["q9"] = refs["q9"]
    prompts = pl.DataFrame({"id": list(QUESTIONS), "prompt": list(QUESTIONS.values()),
                            "reference": [refs[q] for q in QUESTIONS]})
    rows = pl.DataFrame({
        "prompt_id": list(QUESTIONS) * 2, "round": [0] * 10 + [1] * 10,
        "response": [direct[q] for q in QUESTIONS] + [f"Adding.\nAnswer: {2 * i}" for i in range(10)],
    })
    return prompts, rows


def test_a_consistent_judge_gives_the_right_win_rate():
    prompts, rows = evaluation_case()
    with ChatServer(reply=consistent) as server:
        judge = served_judge(server)
        frame, metrics = judge_evaluation(rows, prompts, pool_references(prompts), judge, "it1")
    Judgements.validate(frame)
    direct = metrics["direct"]
    assert (direct["wins"], direct["losses"], direct["ties"]) == (4, 2, 4)
    assert metrics["win_rate_direct"] == direct["win_rate"] == 0.6  # (4 + 4 / 2) / 10
    assert direct["ties_by_cause"] == {"judged_tie": 3, "identical": 1}
    assert direct["asked"] == 9 and direct["order_swap_agreement"] == 1.0
    assert direct["prefers_first_shown"] == 0.5  # each decisive comparison: once first, once second
    # refined: right everywhere; the four wrong references lose, q4-q9 are the references' own text
    assert metrics["win_rate_refined"] == 0.7  # (4 + 6 / 2) / 10
    assert metrics["refined"]["ties_by_cause"] == {"identical": 6}
    by_id = {r["id"]: r for r in frame.iter_rows(named=True)}
    assert by_id["q0@0"] | {"judge": None} == {
        "id": "q0@0", "prompt_id": "q0", "round": 0, "answer": "Adding.\nAnswer: 0", "reference": "Adding.\nAnswer: 1",
        "answer_first": "answer", "reference_first": "answer", "outcome": "win", "tie_cause": None,
        "parse_error": None, "judge": None, "iteration": "it1"}
    assert by_id["q7@0"]["outcome"] == "loss" and by_id["q9@0"]["answer_first"] == "identical"
    # both orders of each asked comparison, nothing more; refined q0-q3 are the direct
    # answers again: the same requests, sent once
    assert len(server.log) == 2 * 9


def test_a_position_biased_judge_is_measured_as_biased_and_its_flips_are_ties():
    prompts, rows = evaluation_case()
    with ChatServer(reply=first_shown) as server:
        frame, metrics = judge_evaluation(rows, prompts, pool_references(prompts), served_judge(server), "it1")
    Judgements.validate(frame)
    direct = metrics["direct"]
    assert direct["prefers_first_shown"] == 1.0 and direct["order_swap_agreement"] == 0.0
    assert (direct["wins"], direct["losses"]) == (0, 0)  # every flip is a tie, not a win
    assert direct["ties_by_cause"] == {"orders_disagree": 9, "identical": 1}
    assert direct["win_rate"] == 0.5
    flipped = frame.filter(pl.col("tie_cause") == "orders_disagree").row(0, named=True)
    assert (flipped["answer_first"], flipped["reference_first"]) == ("answer", "reference")


def test_a_judge_biased_only_when_unsure_keeps_its_clear_verdicts():
    prompts, rows = evaluation_case()
    with ChatServer(reply=half_biased) as server:
        _, metrics = judge_evaluation(rows, prompts, pool_references(prompts), served_judge(server), "it1")
    direct = metrics["direct"]
    # clear cases (q0-q3 wins, q7-q8 losses) agree in both orders; q4-q6 (both right) flip: ties
    assert (direct["wins"], direct["losses"], direct["ties"]) == (4, 2, 4)
    assert direct["ties_by_cause"] == {"orders_disagree": 3, "identical": 1}
    assert direct["order_swap_agreement"] == round(6 / 9, 4)
    assert direct["prefers_first_shown"] == round((6 + 6) / 18, 4)  # 6 clear: half first; 3 unsure: all first


def test_unparseable_replies_are_ties_with_their_reason_counted():
    def mumbling(messages: list[dict]) -> str:
        question, a, b = shown(messages)
        return "Hard to say." if question.endswith("1 + 1?") else consistent(messages)

    prompts, rows = evaluation_case()
    with ChatServer(reply=mumbling) as server:
        frame, metrics = judge_evaluation(rows, prompts, pool_references(prompts), served_judge(server), "it1")
    Judgements.validate(frame)
    direct = metrics["direct"]
    assert direct["wins"] == 3 and direct["ties_by_cause"]["unparsed"] == 1  # q1's win became a tie
    assert direct["unparsed_by_reason"] == {"no 'Winner:' line": 2}  # both of its orders
    assert frame.filter(pl.col("id") == "q1@0")["parse_error"].to_list() == [
        "no 'Winner:' line; no 'Winner:' line"]


def test_judge_metrics_of_nothing():
    assert judge_metrics([])["win_rate"] is None


# ---- the judge as a pair signal ---------------------------------------------------------


def test_pairs_by_the_judge_prefer_the_answer_that_wins_most_comparisons():
    prompts = pl.DataFrame({"id": ["q3", "q5"], "prompt": [QUESTIONS["q3"], QUESTIONS["q5"]],
                            "answer": [None, None], "task": ["reference"] * 2, "metadata": [None] * 2})
    answers = [("q3", "Adding.\nAnswer: 7"), ("q3", "Adding.\nAnswer: 6"), ("q3", "Adding.\nAnswer: 8"),
               ("q3", "Adding.\nAnswer: 6"), ("q5", "Adding.\nAnswer: 11"), ("q5", "Adding.\nAnswer: 10")]
    rows = pl.DataFrame({
        "id": [f"{p}:{k}@0" for k, (p, _) in enumerate(answers)], "candidate_id": [f"{p}:{k}" for k, (p, _) in
                                                                                    enumerate(answers)],
        "prompt_id": [p for p, _ in answers], "prompt": [QUESTIONS[p] for p, _ in answers],
        "round": [0] * len(answers), "response": [a for _, a in answers], "feedback": [""] * len(answers),
        "verdict": ["correct"] * len(answers), "score": [None] * len(answers),
    }, schema_overrides={"score": pl.Int64})
    with ChatServer(reply=consistent) as server:
        values, judgements = judge_values(rows, served_judge(server))
    # q3: three distinct answers, three comparisons; the right one (6) wins both of its
    # comparisons, the two wrong ones tie with each other; q5: one comparison
    assert values == {"q3:0@0": 0.5, "q3:1@0": 2.0, "q3:2@0": 0.5, "q3:3@0": 2.0, "q5:4@0": 0.0, "q5:5@0": 1.0}
    assert len(judgements) == 4 and judge_metrics(judgements)["order_swap_agreement"] == 1.0
    pairs = build_pairs(rows, prompts, PromptSet(SRT.folder), PairsConfig(signal="judge"), "it1",
                        tasks=load_tasks(["reference"]), values=values)
    PreferencePairs.validate(pairs)
    chosen = {r["prompt_id"]: (r["chosen"][0]["content"], r["margin"]) for r in pairs.iter_rows(named=True)}
    assert chosen == {"q3": ("Adding.\nAnswer: 6", 1.5), "q5": ("Adding.\nAnswer: 10", 1.0)}


def test_a_preset_without_a_judge_template_is_an_error():
    with ChatServer(reply=consistent) as server:
        role = served_judge(server).role
        with pytest.raises(ValueError, match=r"prompts/micro/judge.jinja2: no judge template in this preset"):
            Judge(role, PromptSet(Path(__file__).parents[1] / "prompts" / "micro"))


# ---- the evaluate stage's glue ------------------------------------------------------------


def test_the_evaluate_stage_judges_against_a_reference_models_answers(tmp_path, monkeypatch):
    from stages._params import StageError
    from stages.evaluate import judge_checkpoint, make_judge

    monkeypatch.setenv("HONING_CACHE_DIR", str(tmp_path))
    prompts, rows = evaluation_case()

    def reference_model(messages: list[dict]) -> str:  # answers every question wrongly
        n = int(messages[-1]["content"].split()[2])
        return f"Adding.\nAnswer: {2 * n + 1}"

    with ChatServer(reply=consistent, model="judge-model") as judge_server, \
            ChatServer(reply=reference_model, model="reference-model") as reference_server:
        spec = {"backend": "openai", "model": "judge-model", "base_url": judge_server.url, "cache": False,
                "max_retries": 0, "max_tokens": 64,
                "reference": {"backend": "openai", "model": "reference-model", "base_url": reference_server.url,
                              "cache": False, "max_retries": 0, "max_tokens": 32}}
        judge, reference = make_judge(spec, SRT, "evaluate@it1")
        frame, metrics = judge_checkpoint(judge, reference, rows, prompts, "it1", "evaluate@it1")
        assert metrics["reference"].endswith(":reference-model")
        # direct: 8 right answers (q0-q6, q9) beat the wrong references; q7-q8 wrote the same wrong text
        assert (metrics["direct"]["wins"], metrics["direct"]["ties"]) == (8, 2)
        assert metrics["win_rate_refined"] == 1.0
        assert frame["reference"].to_list()[0] == "Adding.\nAnswer: 1"
        # the pool's own references
        judge, reference = make_judge({k: v for k, v in spec.items() if k != "reference"}, SRT, "evaluate@it1")
        _, pooled = judge_checkpoint(judge, reference, rows, prompts, "it1", "evaluate@it1")
        assert pooled["reference"] == "pool" and pooled["win_rate_direct"] == 0.6
        with pytest.raises(StageError, match=r"`evaluate.judge.reference`: expected pool or a role block"):
            make_judge({**spec, "reference": "gpt-4"}, SRT, "evaluate@it1")


def test_the_build_pairs_stage_asks_the_judge_its_params_name(tmp_path, monkeypatch):
    import json

    import stages.build_pairs as stage
    from stages._params import StageError

    prompts = pl.DataFrame({"id": ["q2"], "prompt": [QUESTIONS["q2"]], "answer": [None], "task": ["reference"],
                            "metadata": [None]})
    rows = pl.DataFrame({
        "id": ["q2:0@0", "q2:1@0"], "candidate_id": ["q2:0", "q2:1"], "prompt_id": ["q2", "q2"],
        "prompt": [QUESTIONS["q2"]] * 2, "round": [0, 0], "response": ["Adding.\nAnswer: 5", "Adding.\nAnswer: 4"],
        "feedback": ["", ""], "verdict": ["correct", "correct"], "score": [None, None],
    }, schema_overrides={"score": pl.Int64})
    inputs = {"data/prepare/train.parquet": prompts, "data/it1/refine/refinements.parquet": rows}
    monkeypatch.setattr(stage, "read_artifact", lambda path, schema: inputs[path])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HONING_CACHE_DIR", str(tmp_path / "cache"))
    Path("params.yaml").write_text("max_cost_usd: null\n")  # the run's cap, which the judge's budget reads
    with ChatServer(reply=consistent) as server:
        judge = {"backend": "openai", "model": server.model, "base_url": server.url, "cache": False,
                 "max_retries": 0, "max_tokens": 64}
        params = {"templates": str(SRT.folder), "iterations": {"it1": {"build_pairs": {}}},
                  "build_pairs": {"signal": "judge", "min_margin": 1.0, "judge": judge, "reward_model": None}}
        monkeypatch.setattr(stage, "load_params", lambda name, key: params)
        stage.run(["it1"])
        pairs = pl.read_parquet("data/it1/build_pairs/pairs.parquet")
        assert pairs["chosen"].to_list() == [[{"role": "assistant", "content": "Adding.\nAnswer: 4"}]]
        metrics = json.loads(Path("metrics/it1/build_pairs.json").read_text())
        assert metrics["judge"]["comparisons"] == 1 and metrics["judge"]["order_swap_agreement"] == 1.0
        assert metrics["judge_calls"]["requests"] == 2  # both orders
        params["build_pairs"]["judge"] = None
        with pytest.raises(StageError, match=r"`build_pairs.judge`: signal 'judge' needs it \(\{backend: ..."):
            stage.run(["it1"])
