from pathlib import Path

import polars as pl
import pytest

from honing.artifacts.prepare import PrepareConfig, prepare
from honing.calls.roles import Role
from honing.method.critique import RuleCritic
from honing.method.feedback import unparsed
from honing.method.meta_corpus import MetaCorpusConfig, build_meta_corpus
from honing.method.prompts import PromptSet
from honing.micro import tinymodel
from honing.tasks import micro
from honing.tasks.families import load_tasks
from schemas.meta_corpus import MetaCorpus
from schemas.prompts import Prompts
from schemas.quarantine import Quarantine

TEMPLATES = PromptSet(Path(__file__).parents[1] / "prompts" / "micro")
TASKS = load_tasks(["micro"])
ORACLE = RuleCritic(micro.check)  # the micro world's rule oracle


class HalfUnreadableCritic:
    """The oracle, except that every other reply is unreadable (as a real critic's may be)."""

    name = "half-unreadable"

    def critique(self, prompts, responses):
        out = ORACLE.critique(prompts, responses)
        return [(text if i % 2 else "garbled", fb if i % 2 else unparsed("no verdict"))
                for i, (text, fb) in enumerate(out)]


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    path = tinymodel.save_untrained(tmp_path_factory.mktemp("tiny") / "model")
    return Role.from_params("policy", {"backend": "transformers", "cache": False}, model=str(path))


@pytest.fixture(scope="module")
def meta_prompts():
    return prepare(PrepareConfig(micro_problems=6, split={"meta": 1.0}, decontaminate_ngram=0), Prompts).meta


def test_corpus_rows_by_source_with_oracle_feedback(policy, meta_prompts):
    cfg = MetaCorpusConfig(num_samples=1, max_tokens=8, gold_critiques=3, noise_critiques=4)
    corpus, quarantine = build_meta_corpus(meta_prompts, policy, ORACLE, TEMPLATES, cfg, tasks=TASKS)
    MetaCorpus.validate(corpus)
    counts = dict(corpus.group_by("response_source").len().iter_rows())
    assert counts == {"policy_greedy": 6, "policy_sampled": 6, "gold": 3, "noise": 4}
    assert quarantine.height == 0
    gold = corpus.filter(pl.col("response_source") == "gold")
    assert gold["verdict"].to_list() == ["correct"] * 3 and gold["score"].to_list() == [10] * 3
    # the refinement is the reference solution of the prompt
    refs = dict(zip(meta_prompts["id"].to_list(), meta_prompts["reference"].to_list(), strict=True))
    assert all(r["refinement"] == refs[r["prompt_id"]] for r in corpus.iter_rows(named=True))


def test_unreadable_feedback_is_quarantined_with_its_reason(policy, meta_prompts):
    cfg = MetaCorpusConfig(num_samples=0, max_tokens=8, gold_critiques=0, noise_critiques=0)
    corpus, quarantine = build_meta_corpus(meta_prompts, policy, HalfUnreadableCritic(), TEMPLATES, cfg, tasks=TASKS)
    Quarantine.validate(quarantine)
    assert corpus.height + quarantine.height == 6
    assert quarantine.height == 3
    assert set(quarantine["reason"]) == {"unparseable feedback: no verdict"}
    assert set(quarantine["column"]) == {"feedback"}
