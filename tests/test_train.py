"""TRL really trains the tiny model: SFT on prompt/completion records, DPO on pairs."""

import json
from pathlib import Path

import polars as pl
import pytest
import torch
from transformers import AutoModelForCausalLM

from honing.method.train import TrainConfig, train
from honing.micro import tinymodel

SFT_ARGS = {"learning_rate": 0.01, "num_train_epochs": 3, "per_device_train_batch_size": 8, "max_length": 64,
            "logging_steps": 1}


def msgs(role, text):
    return [{"role": role, "content": text}]


def sft_records(n=16):
    return pl.DataFrame({
        "id": [f"r{i}" for i in range(n)],
        "prompt": [msgs("user", f"Problem : Ann has {10 + i} coins . How many coins now ? Solution :")
                   for i in range(n)],
        "completion": [msgs("assistant", f"Answer : {10 + i}") for i in range(n)],
        "kind": ["answer"] * n, "source_id": ["s"] * n, "iteration": ["it1"] * n,
    })


@pytest.fixture(scope="module")
def init_model(tmp_path_factory):
    return str(tinymodel.save_untrained(tmp_path_factory.mktemp("init") / "model", seed=1))


def weights(path):
    return {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(path).state_dict().items()}


def test_sft_lowers_the_loss_and_writes_a_loadable_checkpoint(init_model, tmp_path):
    out = tmp_path / "model"
    result = train(init_model, out, TrainConfig(method="sft", sft=SFT_ARGS), sft_records=sft_records())
    losses = [c["loss"] for c in result["curve"]]
    assert result["metrics"]["sft_records"] == 16 and result["metrics"]["sft_steps"] == 6
    assert losses[-1] < losses[0] * 0.8
    before, after = weights(init_model), weights(out)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert not list(tmp_path.glob(".model.*")) and not list(tmp_path.glob(".train-*"))  # no leftovers


def test_sft_then_dpo(init_model, tmp_path):
    pairs = pl.DataFrame({
        "prompt": [msgs("user", f"Problem : Ann has {10 + i} coins . Solution :") for i in range(8)],
        "chosen": [msgs("assistant", f"Answer : {10 + i}") for i in range(8)],
        "rejected": [msgs("assistant", f"Answer : {20 + i}") for i in range(8)],
    })
    cfg = TrainConfig(method="sft+dpo", sft=SFT_ARGS,
                      dpo={"learning_rate": 0.005, "beta": 0.1, "num_train_epochs": 2,
                           "per_device_train_batch_size": 4, "max_length": 64, "logging_steps": 1})
    result = train(init_model, tmp_path / "model", cfg, sft_records=sft_records(), pairs=pairs)
    assert [c["phase"] for c in result["curve"]][-1] == "dpo"
    assert result["metrics"]["dpo_pairs"] == 8 and result["metrics"]["dpo_steps"] == 4
    assert (Path(tmp_path / "model") / "model.safetensors").exists()


def test_lora_is_merged_into_the_saved_checkpoint(init_model, tmp_path):
    cfg = TrainConfig(method="sft", sft=SFT_ARGS,
                      lora={"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    train(init_model, tmp_path / "model", cfg, sft_records=sft_records())
    assert not (tmp_path / "model" / "adapter_config.json").exists()
    assert set(weights(tmp_path / "model")) == set(weights(init_model))


def test_missing_training_data_is_a_clear_error(init_model, tmp_path):
    with pytest.raises(ValueError, match="no preference pairs"):
        train(init_model, tmp_path / "m", TrainConfig(method="dpo"), pairs=pl.DataFrame())
    with pytest.raises(ValueError, match="train.method must be one of"):
        train(init_model, tmp_path / "m", TrainConfig(method="ppo"))


def test_curves_go_through_dvclive_without_wall_clock_figures(init_model, tmp_path, monkeypatch):
    from dvclive import Live

    monkeypatch.chdir(tmp_path)  # no DVC repository here: dvclive logs to the folder only
    cfg = TrainConfig(method="sft+dpo", sft=SFT_ARGS,
                      dpo={"learning_rate": 0.005, "beta": 0.1, "num_train_epochs": 1,
                           "per_device_train_batch_size": 4, "max_length": 64, "logging_steps": 1})
    pairs = pl.DataFrame({
        "prompt": [msgs("user", f"Problem : Ann has {10 + i} coins . Solution :") for i in range(8)],
        "chosen": [msgs("assistant", f"Answer : {10 + i}") for i in range(8)],
        "rejected": [msgs("assistant", f"Answer : {20 + i}") for i in range(8)],
    })
    folders = []
    for run in ("a", "b"):
        with Live(f"live-{run}", dvcyaml=None, save_dvc_exp=False) as live:
            result = train(init_model, tmp_path / f"model-{run}", cfg, sft_records=sft_records(), pairs=pairs,
                           logger=live)
        folders.append(tmp_path / f"live-{run}")

    folder = folders[0]
    loss = (folder / "plots/metrics/loss.tsv").read_text().splitlines()
    assert loss[0] == "step\tloss"
    steps = [int(line.split("\t")[0]) for line in loss[1:]]
    # SFT's 6 steps, then DPO's 2, counted on: one line across both phases
    assert steps == list(range(1, 9))
    assert [float(line.split("\t")[1]) for line in loss[1:]] == pytest.approx([c["loss"] for c in result["curve"]],
                                                                               abs=1e-4)
    assert (folder / "plots/metrics/sft/learning_rate.tsv").is_file()
    assert (folder / "plots/metrics/dpo/rewards/margins.tsv").is_file()
    summary = json.loads((folder / "metrics.json").read_text())
    assert summary["step"] == 8 and "loss" in summary
    # seconds and throughput go to the stage's runtime file, not into the curves
    assert set(result["runtime"]) >= {"sft_train_runtime", "dpo_train_runtime"}
    written = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert not [name for name in written if "runtime" in name or "per_second" in name], written
    assert not [name for name in written if not (name == "metrics.json" or name.startswith("plots/metrics/"))]
    # equal data, equal files: two runs write the same bytes
    assert {name: (folder / name).read_bytes() for name in written} == {
        name: (folders[1] / name).read_bytes() for name in written}


def test_the_last_step_is_logged_however_few_the_steps(init_model, tmp_path):
    # 6 steps against logging_steps 10: the trainer alone would log no loss at all
    result = train(init_model, tmp_path / "model", TrainConfig(method="sft", sft={**SFT_ARGS, "logging_steps": 10}),
                   sft_records=sft_records())
    assert [c["step"] for c in result["curve"]] == [6]
    assert result["metrics"]["sft_final_loss"] == result["curve"][-1]["loss"]
