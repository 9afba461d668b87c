"""The SRT path, whole, at unit level: reasoning-gym prompts, a policy and a strong
critic served by the loopback OpenAI-compatible server (scripted replies in SRT's
format), the prompts/srt preset: critique -> rewrite refinement -> evaluation in
rewrite and in critic mode; the meta corpus's refinement rule; a critic whose
replies never parse; and the stage glue's one-line errors.

The scripted policy answers a question wrongly when its answer is even (off by
one), rewrites it right when asked to refine; the scripted critic checks the
final answer against the gym's and writes weaknesses, a score, suggestions, a
verdict and (unless told not to) a refinement.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml
from conftest import copy_project, subprocess_env

from honing.artifacts.io import write_artifact
from honing.artifacts.prepare import PrepareConfig, prepare
from honing.calls.roles import Role
from honing.calls.server import ChatServer
from honing.method.critique import CriticError, ModelCritic, feedback_frame, make_critic
from honing.method.evaluate import EvaluateConfig, evaluate
from honing.method.feedback import load_preset, plan_feedback
from honing.method.meta_corpus import MetaCorpusConfig, build_meta_corpus
from honing.method.prompts import PromptSet
from honing.method.refine import RefineConfig, refine_rounds
from honing.tasks.families import load_tasks
from honing.tasks.reasoning_gym import final_answer
from schemas.candidates import Candidates
from schemas.evaluation import EvaluationRows
from schemas.feedback import Feedback
from schemas.meta_corpus import MetaCorpus
from schemas.prompts import Prompts
from schemas.quarantine import Quarantine
from schemas.refinements import Refinements

ROOT = Path(__file__).parents[1]
SRT = ROOT / "prompts" / "srt"
TEMPLATES = PromptSet(SRT)


@pytest.fixture(scope="module")
def prompts() -> pl.DataFrame:
    block = {"size": 24, "tasks": {"chain_sum": {"max_terms": 2, "max_digits": 2}}}
    result = prepare(PrepareConfig(source="reasoning_gym:chain_sum", split={"eval": 1.0}, reasoning_gym=block),
                     Prompts)
    return result.eval.head(10)


class Script:
    """Scripted replies of the policy and of the critic, keyed by the prompt templates."""

    def __init__(self, prompts: pl.DataFrame, *, critic_refines: bool = True, critic_format: bool = True):
        self.answers = dict(zip(prompts["prompt"], prompts["answer"], strict=True))
        self.critic_refines, self.critic_format = critic_refines, critic_format
        self.asked: list[tuple[str, str]] = []  # (kind, request text) of every reply

    def count(self, kind: str) -> int:
        return sum(k == kind for k, _ in self.asked)

    def right(self, question: str) -> str:
        return self.answers[question]

    def __call__(self, messages: list[dict]) -> str:
        text = messages[-1]["content"]
        kind = ("feedback" if text.startswith("You are a strict teacher") else
                "rewrite" if text.startswith("Question:\n") else "answer")
        self.asked.append((kind, text))
        if kind == "feedback":
            question = text.split("Question:\n", 1)[1].split("\n\nAnswer:\n", 1)[0]
            response = text.split("\n\nAnswer:\n", 1)[1].split("\n\nReply in exactly this format", 1)[0]
            return self.feedback(question, response)
        if kind == "rewrite":  # the refine template
            question = text.split("Question:\n", 1)[1].split("\n\nYour previous answer:", 1)[0]
            return f"I add the terms again.\nAnswer: {self.right(question)}"
        question = text.split("\n\nWork it out step by step", 1)[0]
        right = int(self.right(question))
        return f"I add the terms.\nAnswer: {right + 1 if right % 2 == 0 else right}"

    def feedback(self, question: str, response: str) -> str:
        if not self.critic_format:
            return "This answer looks fine to me."
        right = self.right(question)
        if final_answer(response) == right:
            refinement = f"\nRefinement: {response}" if self.critic_refines else ""
            return f"Weaknesses: none\nScore: 9\nSuggestions: none\nVerdict: correct{refinement}"
        refinement = f"\nRefinement: Adding the terms once more.\nAnswer: {right}" if self.critic_refines else ""
        return ("Here is my review.\nWeaknesses: the sum is off by one.\nScore: 3\n"
                f"Suggestions: add the terms again.\nVerdict: incorrect{refinement}")


def served(server: ChatServer, name: str) -> Role:
    return Role.from_params(name, {"backend": "openai", "model": server.model, "base_url": server.url,
                                   "cache": False, "max_retries": 0, "timeout": 30})


def candidates_of(prompts: pl.DataFrame, policy: Role) -> pl.DataFrame:
    from honing.method.generate import GenerateConfig, generate_candidates

    return generate_candidates(prompts, policy, TEMPLATES, GenerateConfig(num_samples=0, greedy=True), "it1")


def test_critique_then_rewrite_refinement_through_a_served_critic(prompts):
    tasks = load_tasks(prompts["task"].to_list())
    plan = plan_feedback(load_preset(SRT), tasks.families, mode="rewrite")
    script = Script(prompts)
    with ChatServer(reply=script) as policy_server, ChatServer(reply=script, model="strong-critic") as critic_server:
        policy = served(policy_server, "policy")
        critic = make_critic({"backend": "openai", "model": "strong-critic", "base_url": critic_server.url,
                              "cache": False, "max_retries": 0}, policy=policy, templates=TEMPLATES, parse=plan.parse)
        assert isinstance(critic, ModelCritic) and critic.role is not policy and critic.min_parse_rate == 0.5
        candidates = candidates_of(prompts, policy)
        Candidates.validate(candidates)
        feedback = feedback_frame(candidates, critic, "it1")
        Feedback.validate(feedback)
        wrong = [int(a) % 2 == 0 for a in prompts["answer"]]
        assert feedback["verdict"].to_list() == ["incorrect" if w else "correct" for w in wrong]
        assert feedback["score"].to_list() == [3 if w else 9 for w in wrong]
        flagged = feedback.filter(pl.col("verdict") == "incorrect").row(0, named=True)
        assert (flagged["weaknesses"], flagged["suggestions"]) == ("the sum is off by one.", "add the terms again.")
        assert feedback["critic"].unique().to_list() == [critic.name] and "strong-critic" in critic.name

        rows = feedback.join(candidates.select("id", "prompt", "model"), on="id", how="left", maintain_order="left")
        refined = refine_rounds(rows, policy, critic, TEMPLATES, RefineConfig(rounds=2, mode="rewrite"), "it1",
                                splice=plan.splice)
    Refinements.validate(refined)
    assert refined.filter(pl.col("round") == 1).height == sum(wrong)  # only the flagged ones, and once
    for r in refined.filter(pl.col("round") == 1).iter_rows(named=True):
        assert r["response"] == f"I add the terms again.\nAnswer: {script.right(r['prompt'])}"
        assert r["verdict"] == "correct"
    # the policy was asked to rewrite, with the feedback in its prompt
    rewrites = [text for kind, text in script.asked if kind == "rewrite"]
    assert len(rewrites) == sum(wrong) and "the sum is off by one." in rewrites[0]


@pytest.mark.parametrize("mode", ["rewrite", "critic"])
def test_evaluation_refines_in_the_preset_mode(prompts, mode):
    tasks = load_tasks(prompts["task"].to_list())
    plan = plan_feedback(load_preset(SRT), tasks.families, mode=mode)
    script = Script(prompts)
    with ChatServer(reply=script) as server:
        policy = served(server, "policy")
        critic = make_critic({"backend": "self"}, policy=policy, templates=TEMPLATES, parse=plan.parse)
        rows, metrics = evaluate(prompts, policy, critic, TEMPLATES,
                                 EvaluateConfig(refine=RefineConfig(rounds=2, mode=mode)), "ck",
                                 tasks=tasks, splice=plan.splice)
    EvaluationRows.validate(rows)
    wrong = sum(int(a) % 2 == 0 for a in prompts["answer"])
    assert 0 < wrong < prompts.height
    assert metrics["accuracy_direct"] == round(1 - wrong / prompts.height, 4)
    assert metrics["accuracy_per_round"] == [metrics["accuracy_direct"], 1.0, 1.0]
    assert (metrics["fixed"], metrics["broken"], metrics["unparsed_feedback"]) == (wrong, 0, 0)
    assert metrics["critic_recall_wrong"] == 1.0 and metrics["critic_false_alarm_rate"] == 0.0
    assert script.count("rewrite") == (wrong if mode == "rewrite" else 0)  # critic mode takes the feedback's refinement


def test_meta_corpus_drops_rows_without_a_refinement(prompts):
    tasks = load_tasks(prompts["task"].to_list())
    plan = plan_feedback(load_preset(SRT), tasks.families)
    script = Script(prompts, critic_refines=False)
    with ChatServer(reply=script) as server:
        policy = served(server, "policy")
        critic = make_critic({"backend": "openai", "model": server.model, "base_url": server.url, "cache": False},
                             policy=policy, templates=TEMPLATES, parse=plan.parse)
        corpus, quarantine = build_meta_corpus(prompts, policy, critic, TEMPLATES,
                                               MetaCorpusConfig(num_samples=0, noise_critiques=0), tasks=tasks)
    MetaCorpus.validate(corpus)
    Quarantine.validate(quarantine)
    wrong = {pid for pid, a in zip(prompts["id"], prompts["answer"], strict=True) if int(a) % 2 == 0}
    # judged correct and right by the gym's verifier: the answer is its own refinement
    assert set(corpus["prompt_id"]) == set(prompts["id"]) - wrong
    assert (corpus["refinement"] == corpus["response"]).all() and set(corpus["verdict"]) == {"correct"}
    # judged incorrect with no refinement and no reference solution: dropped, with the reason
    assert sorted(quarantine["row_id"]) == sorted(f"{pid}:0" for pid in wrong)
    assert set(quarantine["column"]) == {"refinement"}
    assert set(quarantine["reason"]) == {"no refinement: the critic wrote none, the prompt has no reference "
                                         "solution, and the answer is judged incorrect (rule check: wrong)"}


def test_meta_corpus_never_takes_a_wrong_answer_the_critic_called_right(prompts):
    """A lenient critic says "correct" to a wrong answer and writes no refinement: the
    rule check disagrees, so the row is dropped rather than kept as its own refinement."""
    tasks = load_tasks(prompts["task"].to_list())

    class Lenient:
        name = "lenient"

        def critique(self, questions, responses):
            fb = plan_feedback(load_preset(SRT), tasks.families).parse(
                "Weaknesses: none\nScore: 10\nSuggestions: none\nVerdict: correct")
            return [("Verdict: correct", fb)] * len(responses)

    with ChatServer(reply=Script(prompts)) as server:
        corpus, quarantine = build_meta_corpus(prompts, served(server, "policy"), Lenient(), TEMPLATES,
                                               MetaCorpusConfig(num_samples=0, noise_critiques=0), tasks=tasks)
    wrong = sum(int(a) % 2 == 0 for a in prompts["answer"])
    assert (corpus.height, quarantine.height) == (prompts.height - wrong, wrong)
    assert all(r.endswith("judged correct (rule check: wrong)") for r in quarantine["reason"])


def test_a_critic_whose_replies_never_parse_stops_after_the_probe(prompts):
    tasks = load_tasks(prompts["task"].to_list())
    plan = plan_feedback(load_preset(SRT), tasks.families)
    script = Script(prompts, critic_format=False)
    with ChatServer(reply=script) as server:
        policy = served(server, "policy")
        critic = make_critic({"backend": "openai", "model": server.model, "base_url": server.url, "cache": False,
                              "parse_probe": 4}, policy=policy, templates=TEMPLATES, parse=plan.parse)
        candidates = candidates_of(prompts, policy)
        with pytest.raises(CriticError) as err:
            feedback_frame(candidates, critic, "it1")
    assert script.count("feedback") == 4  # the probe only, not all 10
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"critic {critic.name}: 0 of its first 4 replies parsed (0%), below "
                              "critic.min_parse_rate 0.5; stopped before the rest. First unparsed: none of the "
                              "fields Weaknesses/Score/Suggestions/Verdict found: 'This answer looks fine to me.'")


def test_a_critic_that_parses_often_enough_answers_every_row(prompts):
    tasks = load_tasks(prompts["task"].to_list())
    plan = plan_feedback(load_preset(SRT), tasks.families)
    script = Script(prompts)
    with ChatServer(reply=script) as server:
        policy = served(server, "policy")
        critic = make_critic({"backend": "openai", "model": server.model, "base_url": server.url, "cache": False,
                              "parse_probe": 4}, policy=policy, templates=TEMPLATES, parse=plan.parse)
        feedback = feedback_frame(candidates_of(prompts, policy), critic, "it1")
    assert script.count("feedback") == prompts.height
    assert feedback["parse_error"].null_count() == prompts.height


@pytest.mark.parametrize("spec, message", [
    ({"min_parse_rate": 1.5}, "params.yaml `critic.min_parse_rate`: expected a share 0..1, got 1.5"),
    ({"parse_probe": 0}, "params.yaml `critic.parse_probe`: expected a count >= 1, got 0"),
])
def test_bad_parse_guard_settings(spec, message):
    with pytest.raises(ValueError, match=message):
        make_critic({"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:1/v1", **spec},
                    policy=None, templates=TEMPLATES, parse=lambda t: None)


# ---------------------------------------------------------------- the stages, one line each


def stage(root: Path, *args: str, cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=root, env=subprocess_env(cache),
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def critique_project(tmp_path, prompts):
    """A project copy with gym prompts and candidates for it1, the srt preset, and a
    policy on the loopback server: what critique@it1 reads."""
    root = copy_project(tmp_path / "repo")
    write_artifact(prompts.with_columns(split=pl.lit("train")), root / "data/prepare/train.parquet", Prompts)
    return root


def set_params(root: Path, **blocks) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    for key, value in blocks.items():
        params[key] = {**params[key], **value} if isinstance(value, dict) else value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_critique_stage_stops_on_an_unparseable_critic_and_writes_nothing(critique_project, prompts, tmp_path):
    root = critique_project
    script = Script(prompts, critic_format=False)
    with ChatServer(reply=script) as server:
        policy = {"backend": "openai", "model": server.model, "base_url": server.url, "max_retries": 0}
        with ChatServer(reply=Script(prompts)) as policy_server:
            candidates = candidates_of(prompts, served(policy_server, "policy"))
        write_artifact(candidates, root / "data/it1/generate/candidates.parquet", Candidates)
        set_params(root, templates="prompts/srt", policy=policy,
                   critique={"critic": {**policy, "parse_probe": 3}})
        committed = (root / "metrics/it1/critique.json").read_bytes()  # the default run's
        done = stage(root, "stages.critique", "it1", cache=tmp_path / "cache")
    assert script.count("feedback") == 3
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: critic openai:"), done.stderr
    assert "0 of its first 3 replies parsed (0%), below critique.critic.min_parse_rate 0.5" in lines[0]
    assert not (root / "data/it1/critique").exists()
    assert (root / "metrics/it1/critique.json").read_bytes() == committed


@pytest.mark.parametrize("templates, mode, message", [
    ("prompts/srt", "continue", "error: refine.mode 'continue' does not fit prompts/srt/preset.yaml: its srt "
                                "feedback supports rewrite, critic"),
    ("prompts/micro", "continue", "error: prompts/micro/preset.yaml: feedback format 'check' belongs to no task "
                                  "family of these prompts (reasoning_gym); use a preset with feedback_format srt"),
])
def test_refine_stage_refuses_an_impossible_combination_before_any_call(critique_project, prompts, tmp_path,
                                                                          templates, mode, message):
    root = critique_project
    script = Script(prompts)
    with ChatServer(reply=script) as server:
        policy = {"backend": "openai", "model": server.model, "base_url": server.url, "max_retries": 0}
        candidates = candidates_of(prompts, served(server, "policy"))
        write_artifact(candidates, root / "data/it1/generate/candidates.parquet", Candidates)
        feedback = candidates.select("id", "prompt_id", "response").with_columns(
            feedback=pl.lit("Verdict: incorrect"), verdict=pl.lit("incorrect"), score=pl.lit(3),
            weaknesses=pl.lit("w"), suggestions=pl.lit("s"), parse_error=pl.lit(None, pl.String),
            refinement=pl.lit(None, pl.String), flagged_step=pl.lit(None, pl.Int64), quoted=pl.lit(None, pl.String),
            recomputed=pl.lit(None, pl.Int64), critic=pl.lit("c"), iteration=pl.lit("it1"))
        write_artifact(feedback, root / "data/it1/critique/feedback.parquet", Feedback)
        set_params(root, templates=templates, policy=policy, refine={"mode": mode})
        calls_before = len(script.asked)
        done = stage(root, "stages.refine", "it1", cache=tmp_path / "cache")
    assert len(script.asked) == calls_before  # not one model call
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [message], done.stderr
    assert not (root / "data/it1/refine").exists()


def test_evaluate_stage_has_no_mode_of_its_own(critique_project, tmp_path):
    root = critique_project
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert "mode" not in params["evaluate"]
    set_params(root, evaluate={"mode": "rewrite"})
    done = stage(root, "stages.evaluate", "base", cache=tmp_path / "cache")
    assert done.returncode == 1
    assert done.stderr.strip() == ("error: params.yaml `evaluate.mode`: evaluation refines in `refine.mode`; "
                                   "remove evaluate.mode")
    assert json.loads(json.dumps(params["refine"]))["mode"] == "continue"
