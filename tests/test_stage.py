"""The DVC glue beside the stage scripts: params, overrides, configs, output files."""

import json
from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from stages._models import call_figures
from stages._outputs import write_metrics
from stages._params import (
    DVC_CONFIG,
    StageError,
    deep_merge,
    iteration_init,
    load_params,
    stage_block,
    to_config,
)

PARAMS = {
    "generate": {"num_samples": 4, "seed": 0},
    "train": {"method": "sft", "sft": {"learning_rate": 0.0005, "num_train_epochs": 2}},
    "iterations": {
        "it1": {"init": "data/train_meta/model", "generate": {}, "train": {}},
        "it2": {"init": "x", "generate": {"seed": 7}, "train": {"sft": {"learning_rate": 0.0001}}},
    },
}


def test_iteration_blocks_override_the_stage_block():
    assert stage_block(PARAMS, "generate", "it1") == {"num_samples": 4, "seed": 0}
    assert stage_block(PARAMS, "generate", "it2") == {"num_samples": 4, "seed": 7}
    assert iteration_init(PARAMS, "it1") == "data/train_meta/model"
    with pytest.raises(StageError, match="no iteration 'it9'"):
        stage_block(PARAMS, "generate", "it9")


def test_overrides_merge_deeply():
    assert stage_block(PARAMS, "train", "it2") == {
        "method": "sft", "sft": {"learning_rate": 0.0001, "num_train_epochs": 2}}
    assert stage_block(PARAMS, "train", "it1") == PARAMS["train"]
    assert deep_merge({"a": {"b": 1, "c": {"d": 2}}}, {"a": {"c": {"e": 3}}, "f": [1]}) == {
        "a": {"b": 1, "c": {"d": 2, "e": 3}}, "f": [1]}
    assert deep_merge({"a": {"b": 1}}, {"a": 5}) == {"a": 5}  # a value replaces a block


def test_params_are_what_params_show_gives_for_every_stage_of_the_project(project_copy, monkeypatch):
    import dvc.api
    from dvc.repo import Repo

    project = project_copy()
    (project / "dvc.lock").unlink()  # params do not come from it; params_show parses it in 0.6 s a stage
    monkeypatch.chdir(project)
    with Repo(config=DVC_CONFIG) as repo:
        names = [stage.addressing for stage in repo.index.stages]
    assert len(names) > 20 and "filter@it1" in names
    for name in names:
        stage, _, key = name.partition("@")
        expected = dvc.api.params_show(stages=[name], config=DVC_CONFIG)
        got = load_params(stage, key or None)
        assert json.dumps(got) == json.dumps(expected), name  # same values, keys in the same order
    with pytest.raises(StageError, match="params of stage 'filter@it9'"):
        load_params("filter", "it9")


def test_params_from_two_files_are_merged_as_params_show_merges_them(tmp_path, monkeypatch):
    import dvc.api
    import yaml

    monkeypatch.chdir(tmp_path)
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "params.yaml").write_text("shared: 1\nrounds: 2\nunused: 3\n")
    (tmp_path / "extra.yaml").write_text("shared: 10\nlr: {a: 1, b: 2}\n")
    (tmp_path / "whole.yaml").write_text("w: {x: 1}\n")
    stages = {"one": {"cmd": "true", "params": ["rounds"]},
              "two": {"cmd": "true", "params": ["shared", "rounds", {"extra.yaml": ["shared", "lr.b"]}]},
              "three": {"cmd": "true", "params": ["rounds", {"whole.yaml": []}]}}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    assert load_params("one") == {"rounds": 2}
    assert load_params("two") == {"params.yaml:shared": 1, "rounds": 2, "extra.yaml:shared": 10, "lr": {"b": 2}}
    assert load_params("three") == {"rounds": 2, "w": {"x": 1}}
    for name in stages:
        assert load_params(name) == dvc.api.params_show(stages=[name], config=DVC_CONFIG), name


@dataclass(frozen=True)
class Cfg:
    rounds: int = 1
    stop: tuple = ()

    def __post_init__(self):
        if self.rounds < 0:
            raise ValueError(f"rounds must be >= 0, got {self.rounds}")


def test_to_config_rejects_unknown_keys_and_bad_values_and_freezes_lists():
    assert to_config(Cfg, {"stop": ["a"]}, "refine") == Cfg(1, ("a",))
    with pytest.raises(StageError, match="`refine`: unknown key\\(s\\) roundz; expected some of rounds, stop"):
        to_config(Cfg, {"roundz": 2}, "refine")
    with pytest.raises(StageError, match="`refine`: rounds must be >= 0, got -1"):
        to_config(Cfg, {"rounds": -1}, "refine")


def test_runtime_figures_go_beside_the_metrics_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_metrics("metrics/it1/generate.json", {"rows": 3, "calls": {"cost_usd": 0.25}},
                  {"calls": {"seconds": 2, "spent_usd": 0.1}})
    assert json.loads((tmp_path / "metrics/it1/generate.json").read_text()) == {"rows": 3, "calls": {"cost_usd": 0.25}}
    assert json.loads((tmp_path / "runtime/it1/generate.json").read_text()) == {
        "calls": {"seconds": 2, "spent_usd": 0.1}}
    write_metrics("metrics/prepare.json", {"rows": 1})
    assert not (tmp_path / "runtime/prepare.json").exists()


def test_critic_calls_reach_the_figures_only_for_a_critic_with_its_own_model():
    from honing.method.critique import RuleCritic
    from honing.tasks.micro import check

    policy = SimpleNamespace(metrics=lambda: {"cost_usd": 0.0}, runtime=lambda: {"seconds": 1})
    served = SimpleNamespace(role=SimpleNamespace(metrics=lambda: {"cost_usd": 1.5}, runtime=lambda: {"seconds": 2}))
    assert call_figures(policy, served) == ({"calls": {"cost_usd": 0.0}, "critic_calls": {"cost_usd": 1.5}},
                                            {"calls": {"seconds": 1}, "critic_calls": {"seconds": 2}})
    assert call_figures(policy, SimpleNamespace(role=policy)) == ({"calls": {"cost_usd": 0.0}},
                                                                  {"calls": {"seconds": 1}})
    assert call_figures(policy, RuleCritic(check))[0] == {"calls": {"cost_usd": 0.0}}


# ---- budgets: bad settings name where they sit in params.yaml -------------------------


def test_a_bad_critic_price_names_its_block_and_a_bad_run_cap_its_key(tmp_path):
    from honing.calls.ledger import CostSettingError
    from honing.method.feedback import FeedbackPlan, parse_srt
    from stages._critics import make_stage_critic
    from stages._models import run_cap

    params = {"templates": "prompts/srt",
              "critic": {"backend": "openai", "model": "m", "price": {"input_per_mtok": "cheap"}}}
    plan = FeedbackPlan(parse_srt)
    with pytest.raises(CostSettingError, match=r"^params.yaml `critic.price`: input_per_mtok must be a number"):
        make_stage_critic(params, params["critic"], policy=None, stage="meta_corpus", plan=plan)
    spec = {"backend": "openai", "model": "m", "price": {"output_per_mtok": -1}}
    with pytest.raises(CostSettingError, match=r"^params.yaml `refine.critic.price`: output_per_mtok must be >= 0"):
        make_stage_critic(params, spec, policy=None, stage="refine@it2", plan=plan)

    path = tmp_path / "params.yaml"
    path.write_text("max_cost_usd: 2.5\n")
    assert run_cap(path) == 2.5
    path.write_text("max_cost_usd: null\n")
    assert run_cap(path) is None
    path.write_text("max_cost_usd: [1]\n")
    with pytest.raises(CostSettingError, match=r"`max_cost_usd`: expected a number of US dollars >= 0"):
        run_cap(path)
