"""TRL really trains the tiny model: SFT on prompt/completion records, DPO on pairs."""

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
        "prompt": [msgs("user", f"Problem : Ann has {10 + i} coins . How many coins now ? Solution :") for i in range(n)],
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
    cfg = TrainConfig(method="sft", sft=SFT_ARGS, lora={"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    train(init_model, tmp_path / "model", cfg, sft_records=sft_records())
    assert not (tmp_path / "model" / "adapter_config.json").exists()
    assert set(weights(tmp_path / "model")) == set(weights(init_model))


def test_missing_training_data_is_a_clear_error(init_model, tmp_path):
    with pytest.raises(ValueError, match="no preference pairs"):
        train(init_model, tmp_path / "m", TrainConfig(method="dpo"), pairs=pl.DataFrame())
    with pytest.raises(ValueError, match="train.method must be one of"):
        train(init_model, tmp_path / "m", TrainConfig(method="ppo"))
