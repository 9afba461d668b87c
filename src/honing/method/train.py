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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

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


class CurveLogger(Protocol):
    """Where training reports its curves, step by step: dvclive's `Live` is one (the
    stages pass it, so `dvc plots` draws the loss and `dvc exp show` lists the last
    values)."""

    step: int

    def log_metric(self, name: str, val: float) -> None: ...

    def next_step(self) -> None: ...


# What the trainer's final log reports about the machine rather than the training
# (seconds, throughput): kept out of the curves, so that equal data gives equal
# curve files, and returned as `runtime` for the stage's runtime/ file.
WALL_CLOCK = ("train_runtime", "train_samples_per_second", "train_steps_per_second")


def _log_callback(logger: CurveLogger, phase: str, offset: int, runtime: dict[str, Any]):
    """A TrainerCallback that sends each logged step to `logger`: `loss` at the step
    counted across phases (`sft+dpo`: DPO's steps follow SFT's), every other figure
    as `<phase>/<name>` (`sft/learning_rate`, `dpo/rewards/margins`)."""
    from transformers import TrainerCallback

    class LogToCurve(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if not state.is_world_process_zero:
                return
            if "train_runtime" in logs:  # the summary after the last step
                runtime.update({f"{phase}_{k}": logs[k] for k in WALL_CLOCK if k in logs})
                return
            if "loss" not in logs:
                return
            logger.step = offset + state.global_step
            logger.log_metric("loss", round(float(logs["loss"]), 6))
            for key, value in logs.items():
                if key != "loss" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    logger.log_metric(f"{phase}/{key}", round(float(value), 6))
            logger.next_step()

    return LogToCurve()


def _last_step_logged():
    """A TrainerCallback that logs the last step as well as every `logging_steps`-th:
    every training has a final loss and a curve point, however few its steps."""
    from transformers import TrainerCallback

    class LogLastStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if args.logging_strategy == "steps" and state.global_step >= state.max_steps:
                control.should_log = True

    return LogLastStep()


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
              seed: int = 0, lora: Mapping[str, Any] | None = None, callbacks: list | None = None):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    config = SFTConfig(output_dir=out_dir, seed=seed, data_seed=seed, completion_only_loss=True,
                       **{**_COMMON_DEFAULTS, **_device_args(), **args})
    trainer = SFTTrainer(model=model, args=config, processing_class=tokenizer,
                         train_dataset=_to_dataset(records, ["prompt", "completion"]),
                         peft_config=_peft_config(lora), callbacks=callbacks)
    trainer.train()
    return trainer, tokenizer


def train_dpo(model_path: str, pairs: pl.DataFrame, out_dir: str, args: Mapping[str, Any],
              seed: int = 0, lora: Mapping[str, Any] | None = None, callbacks: list | None = None):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    config = DPOConfig(output_dir=out_dir, seed=seed, data_seed=seed,
                       **{**_COMMON_DEFAULTS, **_device_args(), **args})
    trainer = DPOTrainer(model=model, args=config, processing_class=tokenizer,
                         train_dataset=_to_dataset(pairs, ["prompt", "chosen", "rejected"]),
                         peft_config=_peft_config(lora), callbacks=callbacks)
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
          sft_records: pl.DataFrame | None = None, pairs: pl.DataFrame | None = None,
          logger: CurveLogger | None = None) -> dict[str, Any]:
    """Run the configured method(s) and save the checkpoint to `out_dir`.

    Returns {"metrics": {...}, "curve": [...] (loss per logged step), "runtime":
    {...} (seconds and throughput per phase)}; `logger`, if given, receives every
    logged step as it happens.
    """
    if cfg.method not in METHODS:
        raise ValueError(f"train.method must be one of {', '.join(METHODS)}, found {cfg.method!r}")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {"method": cfg.method}
    curve: list[dict[str, Any]] = []
    runtime: dict[str, Any] = {}
    current = model_path

    def callbacks(phase: str, offset: int) -> list:
        return [_last_step_logged(), *([_log_callback(logger, phase, offset, runtime)] if logger is not None else [])]

    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".train-") as scratch:
        if "sft" in cfg.method:
            if sft_records is None or sft_records.height == 0:
                raise ValueError("train: method includes sft but there are no SFT records "
                                 "(the filter kept no answer: see the iteration's filter metrics)")
            trainer, tok = train_sft(current, sft_records, f"{scratch}/sft", cfg.sft, cfg.seed, cfg.lora,
                                     callbacks("sft", 0))
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
            trainer, tok = train_dpo(current, pairs, f"{scratch}/dpo", cfg.dpo, cfg.seed, cfg.lora,
                                     callbacks("dpo", metrics.get("sft_steps", 0)))
            metrics.update(dpo_pairs=pairs.height, dpo_steps=trainer.state.global_step,
                           dpo_final_loss=curve_last(trainer))
            curve += _curve(trainer, "dpo")
        _save(trainer, tok, out_dir)
    return {"metrics": metrics, "curve": curve, "runtime": runtime}


def curve_last(trainer) -> float | None:
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return round(losses[-1], 4) if losses else None
