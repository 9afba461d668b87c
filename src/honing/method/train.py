"""train: SFT and/or DPO through TRL, starting from the previous checkpoint.

Keys under `train.sft` and `train.dpo` in params.yaml are TRL's own
`SFTConfig`/`DPOConfig` field names and are passed through unchanged, so TRL's
documentation is honing's. Records are TRL's conversational formats
(prompt/completion messages; prompt/chosen/rejected), so a published honing
dataset trains with TRL alone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import polars as pl

METHODS = ("sft", "dpo", "sft+dpo")

# Settings that keep TRL's per-step overhead down on a tiny CPU model; any of them
# can be overridden from params.yaml.
_COMMON_DEFAULTS: dict[str, Any] = {
    "report_to": [],
    "save_strategy": "no",
    "logging_steps": 10,
    "dataloader_num_workers": 0,
    "disable_tqdm": False,
}


@dataclass(frozen=True)
class TrainConfig:
    method: str = "sft"
    seed: int = 0
    sft: Mapping[str, Any] = field(default_factory=dict)
    dpo: Mapping[str, Any] = field(default_factory=dict)
    lora: Mapping[str, Any] | None = None  # peft LoraConfig fields; None = full fine-tuning


def _device_args() -> dict[str, Any]:
    import torch

    if torch.cuda.is_available():
        return {"bf16": torch.cuda.is_bf16_supported()}
    return {"use_cpu": True, "bf16": False}


def _to_dataset(frame: pl.DataFrame, columns: list[str]):
    from datasets import Dataset

    return Dataset.from_list(frame.select(columns).to_dicts())


def _peft_config(lora: Mapping[str, Any] | None):
    if not lora:
        return None
    from peft import LoraConfig

    return LoraConfig(task_type="CAUSAL_LM", **lora)


def train_sft(model_path: str, records: pl.DataFrame, out_dir: str, args: Mapping[str, Any],
              seed: int = 0, lora: Mapping[str, Any] | None = None):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    config = SFTConfig(output_dir=out_dir, seed=seed, data_seed=seed, completion_only_loss=True,
                       **{**_COMMON_DEFAULTS, **_device_args(), **args})
    trainer = SFTTrainer(model=model, args=config, processing_class=tokenizer,
                         train_dataset=_to_dataset(records, ["prompt", "completion"]),
                         peft_config=_peft_config(lora))
    trainer.train()
    return trainer, tokenizer


def train_dpo(model_path: str, pairs: pl.DataFrame, out_dir: str, args: Mapping[str, Any],
              seed: int = 0, lora: Mapping[str, Any] | None = None):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    config = DPOConfig(output_dir=out_dir, seed=seed, data_seed=seed,
                       **{**_COMMON_DEFAULTS, **_device_args(), **args})
    trainer = DPOTrainer(model=model, args=config, processing_class=tokenizer,
                         train_dataset=_to_dataset(pairs, ["prompt", "chosen", "rejected"]),
                         peft_config=_peft_config(lora))
    trainer.train()
    return trainer, tokenizer


def _save(trainer, tokenizer, out_dir: Path) -> None:
    """Save (LoRA merged) to a temp folder, then rename: no half-written checkpoint."""
    model = trainer.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)


def _curve(trainer, phase: str) -> list[dict[str, Any]]:
    return [{"phase": phase, "step": h["step"], "loss": round(h["loss"], 4)}
            for h in trainer.state.log_history if "loss" in h]


def train(model_path: str, out_dir: str | Path, cfg: TrainConfig,
          sft_records: pl.DataFrame | None = None, pairs: pl.DataFrame | None = None) -> dict[str, Any]:
    """Run the configured method(s) and save the checkpoint to `out_dir`.

    Returns {"metrics": {...}, "curve": [...]} (loss per logged step).
    """
    if cfg.method not in METHODS:
        raise ValueError(f"train.method must be one of {', '.join(METHODS)}, found {cfg.method!r}")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {"method": cfg.method}
    curve: list[dict[str, Any]] = []
    current = model_path
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".train-") as scratch:
        if "sft" in cfg.method:
            if sft_records is None or sft_records.height == 0:
                raise ValueError("train: method includes sft but there are no SFT records "
                                 "(the filter kept no answer: see the iteration's filter metrics)")
            trainer, tok = train_sft(current, sft_records, f"{scratch}/sft", cfg.sft, cfg.seed, cfg.lora)
            metrics.update(sft_records=sft_records.height, sft_steps=trainer.state.global_step,
                           sft_final_loss=curve_last(trainer))
            curve += _curve(trainer, "sft")
            if "dpo" in cfg.method:
                current = f"{scratch}/sft-model"
                _save(trainer, tok, Path(current))
        if "dpo" in cfg.method:
            if pairs is None or pairs.height == 0:
                raise ValueError("train: method includes dpo but there are no preference pairs "
                                 "(no prompt had answers differing by build_pairs.min_margin)")
            trainer, tok = train_dpo(current, pairs, f"{scratch}/dpo", cfg.dpo, cfg.seed, cfg.lora)
            metrics.update(dpo_pairs=pairs.height, dpo_steps=trainer.state.global_step,
                           dpo_final_loss=curve_last(trainer))
            curve += _curve(trainer, "dpo")
        _save(trainer, tok, out_dir)
    return {"metrics": metrics, "curve": curve}


def curve_last(trainer) -> float | None:
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return round(losses[-1], 4) if losses else None
