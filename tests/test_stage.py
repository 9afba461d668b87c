import json
from dataclasses import dataclass

import pytest

from honing.stage import (StageError, iteration_init, run_budget, spent_usd, stage_params, to_config,
                          write_metrics)

PARAMS = {
    "generate": {"num_samples": 4, "seed": 0},
    "iterations": {"it1": {"init": "data/train_meta/model"}, "it2": {"init": "x", "generate": {"seed": 7}}},
}


def test_iteration_blocks_override_the_stage_block():
    assert stage_params("generate", "it1", PARAMS) == {"num_samples": 4, "seed": 0}
    assert stage_params("generate", "it2", PARAMS) == {"num_samples": 4, "seed": 7}
    assert iteration_init(PARAMS, "it1") == "data/train_meta/model"
    with pytest.raises(StageError, match="no iteration 'it9'.*have it1, it2"):
        stage_params("generate", "it9", PARAMS)


@dataclass(frozen=True)
class Cfg:
    rounds: int = 1
    stop: tuple = ()


def test_to_config_rejects_unknown_keys_and_freezes_lists():
    assert to_config(Cfg, {"stop": ["a"]}, "refine") == Cfg(1, ("a",))
    with pytest.raises(StageError, match="`refine`: unknown key\\(s\\) roundz; expected some of rounds, stop"):
        to_config(Cfg, {"roundz": 2}, "refine")


def test_run_dependent_figures_leave_the_metrics_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_metrics("metrics/it1/generate.json", {"rows": 3, "seconds": 1.5, "calls": {
        "cost_usd": 0.25, "seconds": 2, "cache_hits": 4, "spent_usd": 0.1, "retries_timeout": 1}})
    assert json.loads((tmp_path / "metrics/it1/generate.json").read_text()) == {"rows": 3, "calls": {"cost_usd": 0.25}}
    assert json.loads((tmp_path / "runtime/it1/generate.json").read_text()) == {
        "seconds": 1.5, "calls": {"seconds": 2, "cache_hits": 4, "spent_usd": 0.1, "retries_timeout": 1}}


def test_run_budget_subtracts_what_finished_stages_spent(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_metrics("metrics/meta_corpus.json", {"policy_calls": {"cost_usd": 9.0, "spent_usd": 1.25}})
    write_metrics("metrics/it1/critique.json", {"spent_usd": 0.5})
    assert spent_usd() == pytest.approx(1.75)
    assert run_budget({"max_cost_usd": 2.0}) == pytest.approx(0.25)
    assert run_budget({"max_cost_usd": 1.0}) == 0.0
    assert run_budget({}) is None


def test_critic_calls_reach_metrics_only_for_a_critic_with_its_own_model():
    from types import SimpleNamespace

    from honing.critique import OracleCritic
    from honing.stage import critic_metrics

    policy = SimpleNamespace(metrics=lambda: {"cost_usd": 0.0})
    served = SimpleNamespace(role=SimpleNamespace(metrics=lambda: {"cost_usd": 1.5}))
    assert critic_metrics(served, policy) == {"critic_calls": {"cost_usd": 1.5}}
    assert critic_metrics(SimpleNamespace(role=policy), policy) == {}  # self-feedback
    assert critic_metrics(OracleCritic(), policy) == {}
