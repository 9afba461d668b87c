"""The report's summary (what `dvc exp show` compares) and its sample of refinements,
and the report stage's reach in dvc.yaml: every iteration's metrics, every
checkpoint's rows, every training stage's curve."""

from __future__ import annotations

import json

import pytest
import yaml
from import_closure import ROOT
from report_fixture import CHECKPOINTS, eval_prompts, evaluation_rows, make_project

from honing.report.load import default_checkpoints, load_curves, load_inputs
from honing.report.samples import refinement_samples
from honing.report.summary import call_totals, run_summary


def test_the_summary_is_one_level_deep_with_the_compared_figures(tmp_path):
    inputs = load_inputs(make_project(tmp_path / "p"), CHECKPOINTS)
    summary = run_summary(CHECKPOINTS, inputs.evaluations, inputs.stage_metrics)
    assert summary["it1"] == {"accuracy_direct": 0.8333, "accuracy_refined": 0.8333, "refinement_gain": 0.0,
                              "critic_recall_wrong": 0.75, "critic_false_alarm_rate": 0.25,
                              "kept": 17, "sft_records": 25, "pairs": 6, "final_loss": 0.6}  # DPO after SFT
    assert summary["base"]["final_loss"] == 0.07 and summary["train_meta"]["final_loss"] == 0.05
    assert "kept" not in summary["base"]
    # every stage's calls and every evaluation's, the critic's own included
    assert summary["tokens"] == (1200 + 400 + 600 + 100) + 3 * 3000
    assert summary["cost_usd"] == 0.03
    assert all(not isinstance(v, dict) for ck in CHECKPOINTS for v in summary[ck].values())
    json.dumps(summary)  # plain JSON


def test_call_totals_read_every_calls_block():
    assert call_totals([{"calls": {"prompt_tokens": 3, "completion_tokens": 4, "cost_usd": 0.5},
                         "critic_calls": {"prompt_tokens": 1, "completion_tokens": 1, "cost_usd": None},
                         "rows": 9}]) == (9, 0.5)


def test_the_sample_takes_each_kind_in_turn():
    samples = refinement_samples(evaluation_rows("it1"), eval_prompts(), n=4)
    assert [(s["prompt_id"], s["kind"]) for s in samples] == [
        ("p10", "fixed"), ("p00", "broken"), ("p11", "unchanged, still wrong"), ("p01", "unchanged, right")]
    fixed = samples[0]
    assert (fixed["correct_before"], fixed["correct_after"], fixed["verdict"]) == (False, True, "incorrect")
    assert fixed["answer"].endswith("Answer : 40") and fixed["refined"].endswith("Answer : 30")
    assert fixed["prompt"].startswith("Ann has 20 coins") and fixed["reference"] == "30"
    assert refinement_samples(evaluation_rows("it1").head(0), eval_prompts()) == []


def test_curves_are_named_by_checkpoint_in_checkpoint_order(tmp_path):
    root = make_project(tmp_path / "p")
    curves = load_curves(root / "dvclive", ["base", "train_meta", "it1"])
    assert list(curves) == ["base", "train_meta", "it1"]
    assert curves["it1"][:2] == [(1, 0.08), (2, 0.05)]


def test_checkpoints_default_to_params_order(tmp_path):
    root = make_project(tmp_path / "p")
    assert default_checkpoints(root) == ["base", "it1", "train_meta"]  # no params.yaml: by name
    (root / "params.yaml").write_text("checkpoints: {base: a, train_meta: b, it1: c}\n")
    assert default_checkpoints(root) == ["base", "train_meta", "it1"]


@pytest.fixture(scope="module")
def project() -> tuple[dict, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text()), yaml.safe_load((ROOT / "params.yaml").read_text())


def test_the_report_stage_depends_on_every_iteration_and_checkpoint(project):
    dvc, params = project
    deps = set(dvc["stages"]["report"]["deps"])
    missing = [f"metrics/{it}" for it in params["iterations"] if f"metrics/{it}" not in deps]
    missing += [f"data/{ck}/evaluate" for ck in params["checkpoints"] if f"data/{ck}/evaluate" not in deps]
    assert not missing, f"dvc.yaml: the report stage reads {missing} but does not list them as deps"
    assert {"metrics/evaluate", "dvclive", "data/prepare/eval.parquet"} <= deps


def test_the_loss_plot_has_a_line_for_every_training_stage(project):
    dvc, params = project
    (loss,) = [p["training_loss"] for p in dvc["plots"] if isinstance(p, dict) and "training_loss" in p]
    expected = ["dvclive/base/plots/metrics/loss.tsv", "dvclive/train_meta/plots/metrics/loss.tsv",
                *(f"dvclive/{it}/train/plots/metrics/loss.tsv" for it in params["iterations"])]
    assert list(loss["y"]) == expected
