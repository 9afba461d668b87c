"""The referee (honing.calls.referee): SRT feedback from the task's verifier and
reference answer, read off the preset's feedback prompt, served over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from conftest import subprocess_env

from honing.artifacts.prepare import PrepareConfig, prepare
from honing.calls.referee import Referee, RefereeError, feedback_pattern, referee_server
from honing.calls.roles import Role
from honing.method.critique import feedback_frame, make_critic
from honing.method.feedback import parse_srt
from honing.method.meta_corpus import MetaCorpusConfig, build_meta_corpus
from honing.method.prompts import PromptSet
from honing.method.sft import MetaRecordsConfig, meta_records
from honing.tasks.families import load_tasks
from schemas.meta_corpus import MetaCorpus
from schemas.prompts import Prompts
from schemas.sft import SFTRecords

ROOT = Path(__file__).resolve().parents[1]
SRT = PromptSet(ROOT / "prompts" / "srt")


@pytest.fixture(scope="module")
def pool() -> pl.DataFrame:
    block = {"size": 16, "tasks": {"chain_sum": {"max_terms": 2, "max_digits": 2}}}
    return prepare(PrepareConfig(source="reasoning_gym:chain_sum", split={"eval": 1.0}, reasoning_gym=block),
                   Prompts).eval.head(8)


@pytest.fixture
def pool_file(tmp_path, pool) -> Path:
    pool.write_parquet(tmp_path / "pool.parquet")
    return tmp_path / "pool.parquet"


def ask(referee: Referee, prompt: str, response: str) -> str:
    return referee([{"role": "user", "content": SRT.feedback(prompt, response)}])


def test_the_pattern_reads_prompt_and_response_back_from_the_template():
    prompt, response = "Line one\n\nQuestion: what?\nAnswer: x", "I think.\n\nAnswer: 4\n"
    m = feedback_pattern(SRT).fullmatch(SRT.feedback(prompt, response))
    assert (m.group("prompt"), m.group("response")) == (prompt, response)


def test_feedback_on_right_wrong_and_missing_answers(pool_file, pool):
    referee = Referee(pool_file, SRT)
    row = pool.row(0, named=True)
    expression = json.loads(row["metadata"])["metadata"]["expression"]
    gold = row["answer"]
    right = ask(referee, row["prompt"], f"I add them.\nAnswer: {gold}")
    assert right == "Weaknesses: none\nScore: 10\nSuggestions: none\nVerdict: correct"
    assert ask(referee, row["prompt"], f"{expression} = {gold}").endswith("Verdict: correct")  # a last line "= x"

    wrong = ask(referee, row["prompt"], f"Answer: {int(gold) + 1}")
    assert wrong == (f"Weaknesses: the final answer {int(gold) + 1} is wrong.\nScore: 3\n"
                     "Suggestions: Recompute it; end with the line \"Answer: <answer>\".\n"
                     f"Verdict: incorrect\nRefinement: {expression} = {gold}\nAnswer: {gold}")
    fb = parse_srt(wrong)
    assert (fb.verdict, fb.score, fb.refinement) == ("incorrect", 3, f"{expression} = {gold}\nAnswer: {gold}")
    no_line = parse_srt(ask(referee, row["prompt"], "I do not know"))
    assert (no_line.verdict, no_line.score) == ("incorrect", 2)
    assert no_line.weaknesses == 'the final answer "I do not know" is wrong, and no line gives it as "Answer:".'
    empty = parse_srt(ask(referee, row["prompt"], ""))
    assert (empty.verdict, empty.score, empty.weaknesses) == ("incorrect", 1, "the answer gives no final answer.")


def test_a_reference_solution_is_the_refinement():
    row = {"prompt": "Tom has 3 apples and buys 4. How many?", "answer": "7", "task": "reference",
           "reference": "3 + 4 = 7 apples.\n#### 7", "metadata": None}
    referee = Referee("/nonexistent", SRT)
    fb = parse_srt(referee.feedback(row, "Answer: 8"))
    assert (fb.verdict, fb.refinement) == ("incorrect", "3 + 4 = 7 apples.\nAnswer: 7")


def test_requests_it_cannot_judge_do_not_parse(pool_file):
    referee = Referee(pool_file, SRT)
    not_feedback = referee([{"role": "user", "content": "What is 2 + 2?"}])
    unknown = ask(referee, "What is 2 + 2?", "Answer: 4")
    assert not_feedback == "The referee cannot judge this request: it is not the preset's feedback prompt."
    assert unknown == f"The referee cannot judge this request: the question is not in {pool_file}."
    assert parse_srt(not_feedback).verdict == parse_srt(unknown).verdict == "unparsed"


def test_the_pool_is_read_when_it_appears(tmp_path, pool):
    folder = tmp_path / "prepare"
    referee = Referee(folder, SRT)  # started before `prepare` wrote anything
    row = pool.row(0, named=True)
    assert referee.check() == 0 and "is not in" in ask(referee, row["prompt"], "Answer: 1")
    folder.mkdir()
    pool.write_parquet(folder / "eval.parquet")
    pl.DataFrame({"row_id": ["x"], "reason": ["r"]}).write_parquet(folder / "quarantine.parquet")  # not a pool
    assert ask(referee, row["prompt"], f"Answer: {row['answer']}").endswith("Verdict: correct")
    assert referee.check() == pool.height


def test_templates_without_both_slots_are_refused(tmp_path):
    (tmp_path / "answer.jinja2").write_text("{{ prompt }}")
    (tmp_path / "feedback.jinja2").write_text("Review: {{ response }}")
    with pytest.raises(RefereeError, match="the referee needs the prompt, then the response, each exactly once"):
        Referee("pool.parquet", tmp_path)
    with pytest.raises(RefereeError, match="no such prompt template"):
        Referee("pool.parquet", tmp_path / "missing")


def test_over_http_the_openai_backend_gets_srt_feedback_that_matches_the_verifier(pool_file, pool):
    tasks = load_tasks(pool["task"].to_list())
    answers = [f"Answer: {a}" if k % 2 else f"Answer: {int(a) + 5}" for k, a in enumerate(pool["answer"])]
    candidates = pl.DataFrame({"id": [f"c{k}" for k in range(pool.height)], "prompt_id": pool["id"],
                               "prompt": pool["prompt"], "response": answers})
    with referee_server(pool_file, SRT, model="referee") as server:
        critic = make_critic({"backend": "openai", "model": "referee", "base_url": server.url, "cache": False,
                              "max_retries": 0}, policy=None, templates=SRT, parse=parse_srt)
        feedback = feedback_frame(candidates, critic, "it1")
    assert feedback["parse_error"].null_count() == pool.height
    right = [tasks.verify(a, r) for a, r in zip(answers, pool.iter_rows(named=True), strict=True)]
    assert feedback["verdict"].to_list() == ["correct" if ok else "incorrect" for ok in right]
    assert critic.name == f"openai:{server.url}:referee"


def test_meta_records_from_referee_feedback_have_unique_ids(pool_file, pool):
    """A prompt with a right answer (refinement: the answer itself) and a wrong one (the
    referee's refinement) has two distinct refinements: two records, two ids."""
    tasks = load_tasks(pool["task"].to_list())
    gold = dict(zip(pool["prompt"], pool["answer"], strict=True))
    asked: Counter = Counter()

    def answer(messages: list[dict]) -> str:  # greedy (asked first): right; sampled: wrong
        question = messages[-1]["content"].split("\n\nWork it out step by step", 1)[0]
        asked[question] += 1
        return f"Answer: {gold[question]}" if asked[question] == 1 else f"Answer: {int(gold[question]) + 1}"

    with referee_server(pool_file, SRT) as critic_server, referee_server(pool_file, SRT, model="policy") as server:
        server.reply = answer
        policy = Role.from_params("policy", {"backend": "openai", "model": "policy", "base_url": server.url,
                                             "cache": False})
        critic = make_critic({"backend": "openai", "model": "referee", "base_url": critic_server.url,
                              "cache": False}, policy=policy, templates=SRT, parse=parse_srt)
        corpus, quarantine = build_meta_corpus(pool, policy, critic, SRT, MetaCorpusConfig(num_samples=1,
                                               gold_critiques=0, noise_critiques=0, temperature=0.0), tasks=tasks)
    MetaCorpus.validate(corpus)
    assert quarantine.height == 0 and set(corpus["verdict"]) == {"correct", "incorrect"}
    records = meta_records(corpus, SRT, MetaRecordsConfig())
    SFTRecords.validate(records)
    assert records["id"].is_unique().all()
    refinements = records.filter(pl.col("kind") == "refinement")["id"].to_list()
    assert sorted(refinements) == sorted(f"{pid}/refinement{k}" for pid in pool["id"] for k in ("", "1"))


def test_honing_serve_referee_answers_over_http(pool_file, pool, tmp_path):
    import openai

    honing = Path(sys.executable).parent / "honing"
    proc = subprocess.Popen([str(honing), "serve", "--referee", str(pool_file), "--templates",
                             str(ROOT / "prompts/srt")], stdout=subprocess.PIPE, text=True,
                            env=subprocess_env(tmp_path / "cache"))
    try:
        first, second = proc.stdout.readline(), proc.stdout.readline()
        assert first.strip() == f"honing serve: referee over {pool_file} ({pool.height} questions now)"
        url = second.split()[2]
        assert second.startswith("honing serve: http://127.0.0.1:") and second.strip().endswith("model=referee")
        row = pool.row(0, named=True)
        client = openai.OpenAI(base_url=url, api_key="EMPTY", max_retries=0)
        reply = client.chat.completions.create(model="referee", messages=[
            {"role": "user", "content": SRT.feedback(row["prompt"], f"Answer: {row['answer']}")}])
        assert reply.choices[0].message.content.endswith("Verdict: correct")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0
