"""Task families (honing.tasks): each family's verifier, the reasoning-gym source, the
preset checks, and the method modules (filter, pairs, SFT) on a family that is not
the micro world."""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

import polars as pl
import pytest

from honing.artifacts.prepare import PrepareConfig, prepare
from honing.method.feedback import MODES, PresetError, load_preset, parse_srt, plan_feedback
from honing.method.filters import FilterConfig, filter_answers
from honing.method.pairs import PairsConfig, build_pairs
from honing.method.prompts import PromptSet
from honing.method.sft import BuildSFTConfig, iteration_records
from honing.micro import world
from honing.tasks import micro, reasoning_gym, reference
from honing.tasks.base import TaskError
from honing.tasks.families import FAMILIES, load_tasks
from schemas.prompts import Prompts

PRESETS = Path(__file__).parents[1] / "prompts"


# ---------------------------------------------------------------- micro


def old_rule_correct(response: str, answer: str | None) -> bool | None:
    """`honing.method.filters.rule_correct` before task families (commit 4950eec), verbatim."""
    if answer is None:
        return None
    m = re.search(r"Answer : (\S+)\s*$", response.strip())
    got = m.group(1) if m else (re.findall(r"-?\d[\d,]*(?:\.\d+)?", response) or [None])[-1]
    ref = answer.rsplit("####", 1)[-1].strip() if "####" in answer else answer.strip()
    return got is not None and got.replace(",", "").rstrip(".").strip() == ref.replace(",", "").rstrip(".").strip()


def test_micro_verifier_gives_the_old_rule_check_on_the_micro_world():
    family, rng = micro.family(), random.Random(0)
    seen = {True: 0, False: 0}
    for _ in range(600):
        problem = world.make_problem(rng)
        row = {"task": "micro", "answer": str(problem.answer), "metadata": None}
        noisy = world.noisy_solution(problem, rng, carry_drop=0.6, step_noise=0.3)
        for response in (world.gold_solution(problem), noisy, noisy.rsplit(" ; ", 1)[0], noisy[: rng.randint(0, 40)]):
            assert family.verify(response, row) == old_rule_correct(response, row["answer"]), response
            seen[family.verify(response, row)] += 1
    assert min(seen.values()) > 100  # both outcomes were exercised
    assert family.verify("Answer : 7", {"task": "micro", "answer": None}) is None


def test_micro_rows_of_prepare_are_unchanged_by_the_families():
    """The micro ids, prompts, answers and references are those of the pre-family
    prepare (commit 4950eec): digests of its splits' csv, taken from that commit."""
    result = prepare(PrepareConfig(micro_problems=300, decontaminate_ngram=0), Prompts)
    before = {"meta": (74, "cc2e487d070fdf55"), "train": (153, "864536d20cb5e54d"), "eval": (73, "4afc5466f0e53ec9")}
    for split, (height, digest) in before.items():
        frame = getattr(result, split)
        assert set(frame["task"]) == {"micro"} and frame["metadata"].null_count() == height
        old = frame.select("id", "prompt", "reference", "answer", "source", "split").write_csv()
        assert (frame.height, hashlib.sha256(old.encode()).hexdigest()[:16]) == (height, digest), split


# ---------------------------------------------------------------- reference


@pytest.mark.parametrize("response, answer, expected", [
    ("She pays 8 * 9 = 72 dollars.", "8 * 9 = 72\n#### 72", True),
    ("She pays 8 * 9 = 71 dollars.", "8 * 9 = 72\n#### 72", False),
    ("so she earns 1,200 dollars.", "48 * 25 = 1200 #### 1200", True),
    ("Answer : 1199", "#### 1,200", False),
    ("The total is 1,200.", "1200", True),
    ("no number at all", "#### 3", False),
    ("Answer : 3", None, None),
])
def test_reference_family_reads_gsm8k_references_and_thousands(response, answer, expected):
    row = {"task": "reference", "answer": answer, "metadata": None}
    assert reference.family().verify(response, row) is expected


# ---------------------------------------------------------------- reasoning gym


@pytest.fixture(scope="module")
def gym_items():
    return reasoning_gym.items({"chain_sum": {"weight": 2, "max_terms": 3}, "leg_counting": {"weight": 1}},
                               size=24, seed=3)


def test_gym_items_keep_their_entry_and_mix_tasks_by_weight(gym_items):
    tasks = {item["task"] for item in gym_items}
    assert tasks == {"reasoning_gym:chain_sum", "reasoning_gym:leg_counting"}
    for item in gym_items:
        entry = json.loads(item["metadata"])
        assert entry["question"] == item["prompt"] and entry["answer"] == item["answer"]
        assert item["task"] == f"reasoning_gym:{entry['metadata']['source_dataset']}"
    assert reasoning_gym.items({"chain_sum": {"weight": 2, "max_terms": 3}, "leg_counting": {"weight": 1}},
                               size=24, seed=3) == gym_items


def test_gym_verifier_on_right_and_wrong_answers(gym_items):
    family = reasoning_gym.family()
    for item in gym_items:
        row = {**item, "id": "x"}
        right, wrong = item["answer"], str(int(item["answer"]) + 1)
        assert family.verify(f"Let me count.\nAnswer: {right}", row) is True
        assert family.verify(f"**Answer:** {right}\n", row) is True
        assert family.verify(f"<answer>{right}</answer>", row) is True
        assert family.verify(f"I think so.\n{right}", row) is True  # no Answer line: the last line
        assert family.verify(f"Answer: {wrong}", row) is False
        assert family.verify(f"Answer: {right}\nAnswer: {wrong}", row) is False  # the last Answer line counts
        assert family.verify("", row) is False
    assert family.verify("Answer: 3", {"task": "reasoning_gym:chain_sum", "metadata": None}) is None


def test_gym_verifier_uses_the_task_own_scoring():
    # countdown's answer is any expression that reaches the target, not one string
    (item,) = reasoning_gym.items({"countdown": {}}, size=1, seed=0)
    entry = json.loads(item["metadata"])
    numbers, target = entry["metadata"]["numbers"], entry["metadata"]["target"]
    assert reasoning_gym.family().verify(f"Answer: {item['answer']}", item) is True
    assert eval(item["answer"]) == target and sorted(numbers)  # noqa: S307  the gym's own expression
    assert reasoning_gym.family().verify(f"Answer: {' + '.join(map(str, numbers))}", item) is (
        sum(numbers) == target)


def test_unknown_gym_task_names_near_names():
    with pytest.raises(TaskError) as err:
        reasoning_gym.check_task("chain_summ", "prepare.source 'reasoning_gym:chain_summ'")
    message = str(err.value)
    assert message.startswith("prepare.source 'reasoning_gym:chain_summ': unknown reasoning_gym task "
                              "'chain_summ' (near names: chain_sum")
    assert "\n" not in message
    with pytest.raises(TaskError, match=r"unknown reasoning_gym task 'zzzqqq' \(none is near it; there are \d+ tasks"):
        reasoning_gym.check_task("zzzqqq")


@pytest.mark.parametrize("tasks, size, message", [
    ({"chain_sum": {"num_terms": 3}}, 5, r"unknown option\(s\) num_terms for task 'chain_sum'; expected some of "
                                         r"allow_negation, max_digits, max_terms"),
    ({"chain_sum": {"min_terms": 9, "max_terms": 2}}, 5, "reasoning_gym rejected the options of chain_sum: "
                                                         "max_terms must be >= min_terms"),
    ({"chain_sum": {"weight": 0}}, 5, r"tasks.chain_sum.weight must be a number > 0, got 0"),
    ({}, 5, "no task named"),
    ({"chain_sum": {}}, 0, "size must be an integer >= 1, got 0"),
])
def test_bad_gym_options_are_one_line(tasks, size, message):
    with pytest.raises(TaskError, match=message):
        reasoning_gym.items(tasks, size=size, seed=0)


def test_prepare_reads_one_gym_task_or_the_mix():
    block = {"size": 30, "tasks": {"chain_sum": {"weight": 1, "max_terms": 3}, "basic_arithmetic": {"weight": 1}}}
    one = prepare(PrepareConfig(source="reasoning_gym:chain_sum", reasoning_gym=block), Prompts)
    rows = pl.concat([one.meta, one.train, one.eval])
    assert set(rows["task"]) == {"reasoning_gym:chain_sum"} and set(rows["source"]) == {"reasoning_gym:chain_sum"}
    assert rows["metadata"].null_count() == 0 and rows["answer"].null_count() == 0
    mix = prepare(PrepareConfig(source="reasoning_gym", reasoning_gym=block), Prompts)
    assert set(pl.concat([mix.meta, mix.train, mix.eval])["task"]) == {
        "reasoning_gym:chain_sum", "reasoning_gym:basic_arithmetic"}
    with pytest.raises(TaskError, match="unknown reasoning_gym task 'chain_summ' .near names: chain_sum"):
        prepare(PrepareConfig(source="reasoning_gym:chain_summ", reasoning_gym=block), Prompts)


# ---------------------------------------------------------------- families and presets


def test_load_tasks_knows_each_family_by_name():
    assert set(FAMILIES) == {"micro", "reference", "reasoning_gym"}
    tasks = load_tasks(["micro", "reasoning_gym:chain_sum", "reasoning_gym:leg_counting"])
    assert sorted(tasks.families) == ["micro", "reasoning_gym"]
    with pytest.raises(TaskError, match="unknown task family 'gsm'; expected one of micro, reference, reasoning_gym"):
        load_tasks(["gsm"])
    with pytest.raises(TaskError, match="task 'reference' is of family 'reference', which was not loaded"):
        tasks.verify("x", {"id": "p1", "task": "reference", "answer": "1"})


def test_presets_declare_format_and_modes():
    micro_preset, srt = load_preset(PRESETS / "micro"), load_preset(PRESETS / "srt")
    assert (micro_preset.feedback_format, micro_preset.refine_modes) == ("check", ("continue",))
    assert (srt.feedback_format, srt.refine_modes) == ("srt", ("rewrite", "critic"))
    assert set(srt.refine_modes) <= set(MODES)
    for preset in (micro_preset, srt):  # a mode a preset declares has its template
        templates = PromptSet(preset.path.parent)
        assert templates.has("refine") == ("rewrite" in preset.refine_modes)


@pytest.mark.parametrize("preset, families, options, message", [
    ("srt", ["reasoning_gym:chain_sum"], {"mode": "continue"},
     "refine.mode 'continue' does not fit {srt}/preset.yaml: its srt feedback supports rewrite, critic"),
    ("micro", ["micro"], {"mode": "rewrite"},
     "refine.mode 'rewrite' does not fit {micro}/preset.yaml: its check feedback supports continue"),
    ("micro", ["reasoning_gym:chain_sum"], {"mode": "continue"},
     "{micro}/preset.yaml: feedback format 'check' belongs to no task family of these prompts (reasoning_gym)"),
    ("micro", ["micro", "reference"], {},
     "{micro}/preset.yaml: feedback format 'check' is task family 'micro''s own, but these prompts also hold "
     "reference"),
    ("srt", ["reasoning_gym:chain_sum"], {"rule_critic": True},
     "critic backend 'oracle' is a task family's step checker writing 'srt' feedback; reasoning_gym has none"),
    ("srt", ["micro"], {"rule_critic": True},
     "critic backend 'oracle' is a task family's step checker writing 'srt' feedback; micro has none"),
    ("srt", ["micro"], {"mode": "crtic"}, "refine.mode must be one of continue, rewrite, critic, found 'crtic'"),
])
def test_impossible_combinations_are_one_line(preset, families, options, message):
    with pytest.raises(PresetError) as err:
        plan_feedback(load_preset(PRESETS / preset), load_tasks(families).families, **options)
    assert str(err.value).startswith(message.format(srt=PRESETS / "srt", micro=PRESETS / "micro")), str(err.value)
    assert "\n" not in str(err.value)


def test_possible_combinations_give_the_parser_and_step_tools():
    plan = plan_feedback(load_preset(PRESETS / "micro"), load_tasks(["micro"]).families, mode="continue",
                         rule_critic=True)
    assert (plan.parse, plan.check, plan.splice) == (micro.parse_check, micro.check, micro.splice)
    plan = plan_feedback(load_preset(PRESETS / "srt"), load_tasks(["micro", "reasoning_gym:x"]).families,
                         mode="rewrite")
    assert (plan.parse, plan.check, plan.splice) == (parse_srt, None, None)


def test_a_preset_without_its_file_or_with_a_bad_mode(tmp_path):
    with pytest.raises(PresetError, match=f"{tmp_path}/preset.yaml: no such file"):
        load_preset(tmp_path)
    (tmp_path / "preset.yaml").write_text("feedback_format: srt\nrefine_modes: [rewrite, splice]\n")
    with pytest.raises(PresetError, match="refine_modes must be a list of continue, rewrite, critic"):
        load_preset(tmp_path)


# ---------------------------------------------------------------- the method on gym rows


@pytest.fixture(scope="module")
def gym_prompts():
    block = {"size": 8, "tasks": {"chain_sum": {"max_terms": 2}}}
    result = prepare(PrepareConfig(source="reasoning_gym:chain_sum", split={"train": 1.0}, reasoning_gym=block),
                     Prompts)
    return result.train.head(3)


def gym_refinements(prompts: pl.DataFrame) -> pl.DataFrame:
    """Per prompt: a wrong answer (round 0) refined into the right one (round 1), and a
    second candidate that stays wrong; the self-critic judged them as written."""
    rows = []
    for p in prompts.iter_rows(named=True):
        wrong = str(int(p["answer"]) + 10)
        for cand, rnd, text, verdict in ((0, 0, wrong, "correct"), (0, 1, p["answer"], "correct"),
                                         (1, 0, wrong + "0", "incorrect")):
            rows.append({"id": f"{p['id']}:{cand}@{rnd}", "candidate_id": f"{p['id']}:{cand}", "prompt_id": p["id"],
                         "prompt": p["prompt"], "round": rnd, "response": f"Adding up.\nAnswer: {text}",
                         "feedback": "Weaknesses: none\nScore: 8\nSuggestions: none\nVerdict: " + verdict,
                         "verdict": verdict, "score": 8 if verdict == "correct" else 3})
    return pl.DataFrame(rows)


def test_filter_pairs_and_sft_check_gym_rows_with_the_gym_verifier(gym_prompts):
    tasks = load_tasks(gym_prompts["task"].to_list())
    refinements = gym_refinements(gym_prompts)
    finals = refinements.sort("round").group_by("candidate_id", maintain_order=True).last()
    filtered = filter_answers(finals, gym_prompts, FilterConfig(), "it1", tasks=tasks)
    answers = dict(zip(gym_prompts["id"], gym_prompts["answer"], strict=True))
    for r in filtered.iter_rows(named=True):
        right = r["id"].endswith(":0")
        assert r["correct"] is right and r["kept"] is right
        if not right:
            assert r["reason"] == (f"incorrect: final answer '{int(answers[r['prompt_id']]) + 10}0' does not match "
                                   f"the reference '{answers[r['prompt_id']]}'")

    templates = PromptSet(PRESETS / "srt")
    pairs = build_pairs(refinements, gym_prompts, templates, PairsConfig(), "it1", tasks=tasks)
    assert pairs.height == gym_prompts.height
    for pair in pairs.iter_rows(named=True):
        assert pair["chosen"][0]["content"].endswith(f"Answer: {answers[pair['prompt_id']]}")
        assert (pair["chosen_score"], pair["rejected_score"]) == (1.0, 0.0)

    records = iteration_records(filtered, refinements, gym_prompts, templates, BuildSFTConfig(), "it1", tasks=tasks)
    feedback = records.filter(pl.col("kind") == "feedback")
    # round 0 only: ":0" said correct on a wrong answer (left out); ":1" said incorrect on a wrong one (kept)
    assert sorted(feedback["source_id"]) == sorted(f"{pid}:1@0" for pid in gym_prompts["id"])
    assert records.filter(pl.col("kind") == "answer").height == gym_prompts.height


# ---------------------------------------------------------------- the rule check as polars expressions

HOSTILE_PIECES = ["Answer : ", "Answer : 41", "Answer :  7", "Answer : 1,200.", "answer : 3", " ", "\n", "\t",
                  "\x1c", "\x1f", "\x85", "\xa0", "\u2003", "\u3000", "-", "--5", "12", "1,2,3", "3.50", ".5",
                  "٣", "१२", "𝟑", "x", "=", "####", "#### 72", "Step 1 : 34 + 7 = 41 ;", "", "é", "🙂", ","]


def hostile_responses(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(HOSTILE_PIECES) for _ in range(rng.randint(0, 6))) for _ in range(n)]


@pytest.mark.parametrize("family", ["micro", "reference"])
def test_the_vectorized_rule_check_equals_the_python_rule_on_hostile_text(family):
    """filter, pairs and SFT check answers with the family's polars expressions; they
    must read every response exactly as the Python rule does (Rust's regex classes and
    strip differ from Python's on Unicode digits and spaces: these pieces exercise that)."""
    responses = hostile_responses(3000, seed=7)
    answers = [None, "41", "1200", "7", "-5", "3.50", "#### 72", "reasoning #### 1,200", "٣", " 12 ", "0.5"]
    rng = random.Random(8)
    prompts = pl.DataFrame({"id": [f"p{i}" for i in range(len(answers))], "task": [family] * len(answers),
                            "answer": answers}, schema_overrides={"answer": pl.String})
    ids = [f"p{rng.randrange(len(answers))}" for _ in responses] + ["unknown"]
    responses.append("Answer : 41")
    tasks = load_tasks([family])
    assert tasks.families[family].vectorized is not None
    got = tasks.rule_check(pl.Series(responses), pl.Series(ids), prompts)
    by_id = {row["id"]: row for row in prompts.iter_rows(named=True)}
    want_correct = [None if pid not in by_id else tasks.families[family].verify(r, by_id[pid])
                    for r, pid in zip(responses, ids, strict=True)]
    want_answer = [None if pid not in by_id else tasks.families[family].final_answer(r)
                   for r, pid in zip(responses, ids, strict=True)]
    mismatches = [(r, a, c, w) for r, a, c, w in zip(responses, [by_id.get(i, {}).get("answer") for i in ids],
                                                     got["correct"].to_list(), want_correct, strict=True) if c != w]
    assert not mismatches[:5]
    assert got["final_answer"].to_list() == want_answer
    assert sum(c is True for c in want_correct) > 50 and sum(c is False for c in want_correct) > 50
