"""The self-critic's training records (honing.method.critic_data): right feedback only,
right and wrong answers balanced, balanced-noise checks."""

from __future__ import annotations

import random
from pathlib import Path

import polars as pl
import pytest

from honing.method import critic_data
from honing.method.critic_data import (
    EXAMPLES,
    CriticRecordsConfig,
    FeedbackExample,
    balanced,
    critic_records,
    example_stream,
)
from honing.method.prompts import PromptSet
from honing.micro import oracle, world
from honing.tasks.families import load_tasks

TEMPLATES = PromptSet(Path(__file__).parents[1] / "prompts" / "micro")
TASKS = load_tasks(["micro"])


def prompt_rows(n: int) -> list[dict]:
    rng = random.Random(3)
    out = []
    for i in range(n):
        p = world.make_problem(rng, 3, 3)
        out.append({"id": f"p{i}", "prompt": p.text, "answer": str(p.answer), "reference": world.gold_solution(p),
                    "task": "micro", "metadata": None})
    return out


def wrong(problem: world.Problem) -> str:
    """The gold solution with its first step off by one (later steps continue from it)."""
    first = problem.values[0]
    return world.solution_from(problem, [first + 1])


def round0(prompts: list[dict], answers: list[tuple[str, str, str, str]]) -> pl.DataFrame:
    """answers: (prompt id, candidate suffix, response, self-feedback text)."""
    by_id = {p["id"]: p for p in prompts}
    return pl.DataFrame([
        {"id": f"{pid}:{k}@0", "prompt_id": pid, "prompt": by_id[pid]["prompt"], "response": resp,
         "feedback": fb, "verdict": "incorrect" if fb.endswith("incorrect") else "correct"}
        for pid, k, resp, fb in answers])


@pytest.fixture
def case():
    prompts = prompt_rows(4)
    problems = [world.parse_problem(p["prompt"]) for p in prompts]
    gold = [world.gold_solution(p) for p in problems]
    bad = [wrong(p) for p in problems]
    check = [lambda r, p=p: oracle.check(p, r).feedback for p in problems]
    answers = [
        ("p0", "0", gold[0], check[0](gold[0])),  # right answer, right feedback
        ("p0", "1", bad[0], check[0](bad[0])),  # wrong answer, right feedback
        ("p1", "0", gold[1], "Verdict : incorrect"),  # right answer, wrong verdict
        ("p1", "1", bad[1], check[1](gold[1])),  # wrong answer, self-critic says correct
        ("p2", "0", gold[2], check[2](gold[2])),  # right, right
        ("p3", "0", gold[3], check[3](gold[3])),  # right, right
        ("p3", "1", bad[3], check[3](bad[3]).replace("gives", "gives 1")),  # wrong, verdict right, text wrong
    ]
    return prompts, round0(prompts, answers), check


def records(prompts, rows, **cfg):
    return critic_records(rows, pl.DataFrame(prompts), TEMPLATES, CriticRecordsConfig(**cfg), tasks=TASKS)


def test_verified_keeps_only_self_feedback_equal_to_the_checkers(case):
    prompts, rows, _ = case
    kept = {source for _, _, _, source in records(prompts, rows, source="verified")}
    assert kept == {"p0:0@0", "p0:1@0", "p2:0@0", "p3:0@0"}


def test_checker_source_writes_the_strong_critics_feedback_for_every_answer(case):
    prompts, rows, check = case
    out = records(prompts, rows, source="checker")
    assert [source for _, _, _, source in out] == rows["id"].to_list()
    by_source = {source: feedback for _, _, feedback, source in out}
    responses = dict(zip(rows["id"].to_list(), rows["response"].to_list(), strict=True))
    index = {"p0": 0, "p1": 1, "p2": 2, "p3": 3}
    for source, feedback in by_source.items():
        assert feedback == check[index[source.split(":")[0]]](responses[source])
    rid, prompt, _, source = out[0]
    assert rid == f"{source}/feedback" and prompt == TEMPLATES.feedback(rows["prompt"][0], rows["response"][0])


def test_balance_keeps_every_rarer_record_and_at_most_balance_times_the_commoner(case):
    prompts, rows, _ = case
    out = [source for _, _, _, source in records(prompts, rows, source="checker", balance=1.0)]
    wrong_ids = {"p0:1@0", "p1:1@0", "p3:1@0"}  # 3 wrong answers, 4 right ones
    assert wrong_ids <= set(out) and len(out) == 6
    again = [source for _, _, _, source in records(prompts, rows.reverse(), source="checker", balance=1.0)]
    assert set(again) == set(out)  # the choice does not depend on row order
    assert len(records(prompts, rows, source="checker", balance=0.5)) == 3 + 1


def test_balanced_on_its_own():
    examples = [FeedbackExample(f"r{i}", "", "", "", i < 8) for i in range(10)]  # 8 right, 2 wrong
    kept = balanced(examples, 2.0, seed=0)
    assert sum(e.right_answer for e in kept) == 4 and sum(not e.right_answer for e in kept) == 2
    assert balanced(examples, 0.0, seed=0) == examples


@pytest.mark.parametrize("bits", [16, 2])  # 2: the bucket at the cut holds hundreds of examples
def test_the_streamed_balance_chooses_what_balanced_chooses(monkeypatch, bits):
    monkeypatch.setattr(critic_data, "_BUCKET_BITS", bits)
    rng = random.Random(5)
    examples = [FeedbackExample(f"q{i}:{rng.randrange(10**6)}", "", "", "", rng.random() < 0.7) for i in range(3000)]
    frames = [pl.DataFrame([vars(e) for e in examples[k:k + 500]], schema=EXAMPLES) for k in range(0, 3000, 500)]
    for balance in (1.0, 0.5, 2.5):
        streamed = pl.concat(list(critic_data._balanced_stream(iter(frames), CriticRecordsConfig(balance=balance))))
        assert streamed.get_column("id").to_list() == [e.id for e in balanced(examples, balance, seed=0)]


def test_examples_streamed_prompt_by_prompt_are_those_of_one_frame(case):
    prompts, rows, _ = case
    cfg = CriticRecordsConfig(source="checker", balance=1.0, noise_critiques=7)
    whole = pl.concat(list(example_stream([(rows, pl.DataFrame(prompts))], cfg, tasks=TASKS)))
    chunks = [(rows.filter(pl.col("prompt_id") == p["id"]), pl.DataFrame([p])) for p in prompts]
    streamed = pl.concat(list(example_stream(chunks, cfg, tasks=TASKS)))
    assert streamed.equals(whole)
    assert streamed.get_column("id").str.contains(":noise").sum() == 7


def test_noise_critiques_are_checked_balanced_noise_answers(case):
    prompts, rows, _ = case
    out = records(prompts, rows.head(0), source="checker", noise_critiques=40)
    assert out == []  # noise goes to the prompts the iteration answered; here none
    out = records(prompts, rows, source="checker", noise_critiques=40)
    noise = [(rid, fb) for rid, _, fb, source in out if ":noise" in source]
    assert len(noise) == 40
    verdicts = [fb.rsplit(":", 1)[-1].strip() for _, fb in noise]
    assert 0.05 < verdicts.count("correct") / 40 < 0.4  # 3 steps each wrong with p 0.5: 1/8 right
    again = records(prompts, rows, source="checker", noise_critiques=40)
    assert again == out  # seeded


def test_a_bad_source_is_refused():
    with pytest.raises(ValueError, match="feedback source must be one of verified, checker"):
        CriticRecordsConfig(source="self")
