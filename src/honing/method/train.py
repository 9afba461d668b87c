"""train: SFT and/or DPO through TRL, starting from the previous checkpoint.

Keys under `train.sft` and `train.dpo` in params.yaml are TRL's own
`SFTConfig`/`DPOConfig` field names and are passed through unchanged, so TRL's
documentation is honing's. Records are TRL's conversational formats
(prompt/completion messages; prompt/chosen/rejected), so a published honing
dataset trains with TRL alone.

The same call trains on several processes when it runs under `accelerate launch`
(DDP, or DeepSpeed ZeRO from the launch's config file): the config describes the
training as one process runs it, and each of N processes takes 1/N of every batch
(`per_device_train_batch_size / N`), so the global batch, the number of steps and
the learning-rate schedule stay the single process's. Only the main process
writes the checkpoint; every process returns the same figures.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
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


def process_rank() -> int:
    """This process's rank among the launched ones (0 when not launched): the
    variables `accelerate launch` (torchrun, DeepSpeed) sets in each process."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """The one process that writes outputs (every process when not launched is it)."""
    return process_rank() == 0


def per_process_args(args: Mapping[str, Any], config_class, processes: int, where: str) -> dict[str, Any]:
    """`args` for one of `processes` processes: the batch of one optimizer step
    split over them, so that per_device_train_batch_size x processes (x
    gradient_accumulation_steps, unchanged) is the single process's global batch."""
    args = dict(args)
    if processes == 1:
        return args
    key = "per_device_train_batch_size"
    batch = args[key] if key in args else config_class.__dataclass_fields__[key].default
    if batch % processes:
        raise ValueError(f"train: {where}.{key} {batch} does not split over {processes} processes "
                         f"(each process takes an equal share of every batch, so the global batch stays "
                         f"{batch}): use a multiple of {processes} or another number of processes")
    args[key] = batch // processes
    return args


@dataclass(frozen=True)
class TrainConfig:
    method: str = "sft"
    seed: int = 0
    sft: Mapping[str, Any] = field(default_factory=dict)
    dpo: Mapping[str, Any] = field(default_factory=dict)
    lora: Mapping[str, Any] | None = None  # peft LoraConfig fields; None = full fine-tuning


def check_inputs(cfg: TrainConfig, processes: int = 1, sft_records: pl.DataFrame | None = None,
                 pairs: pl.DataFrame | None = None) -> None:
    """What `train` would stop on, checked before any model loads or process starts:
    the method, its data, and batches that split over `processes` (a batch left to
    TRL's default is checked where the trainer is built)."""
    if cfg.method not in METHODS:
        raise ValueError(f"train.method must be one of {', '.join(METHODS)}, found {cfg.method!r}")
    if "sft" in cfg.method and (sft_records is None or sft_records.height == 0):
        raise ValueError("train: method includes sft but there are no SFT records "
                         "(the filter kept no answer: see the iteration's filter metrics)")
    if "dpo" in cfg.method and (pairs is None or pairs.height == 0):
        raise ValueError("train: method includes dpo but there are no preference pairs "
                         "(no prompt had answers differing by build_pairs.min_margin)")
    for phase in ("sft", "dpo"):
        args = getattr(cfg, phase)
        if phase in cfg.method and "per_device_train_batch_size" in args:
            per_process_args(args, None, processes, phase)


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

    args = per_process_args(args, SFTConfig, world_size(), "sft")
    # the config before the model: under DeepSpeed ZeRO-3 it makes the load partition the weights
    config = SFTConfig(output_dir=out_dir, seed=seed, data_seed=seed, completion_only_loss=True,
                       **{**_COMMON_DEFAULTS, **_device_args(), **args})
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    trainer = SFTTrainer(model=model, args=config, processing_class=tokenizer,
                         train_dataset=_to_dataset(records, ["prompt", "completion"]),
                         peft_config=_peft_config(lora), callbacks=callbacks)
    trainer.train()
    return trainer, tokenizer


def train_dpo(model_path: str, pairs: pl.DataFrame, out_dir: str, args: Mapping[str, Any],
              seed: int = 0, lora: Mapping[str, Any] | None = None, callbacks: list | None = None):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    args = per_process_args(args, DPOConfig, world_size(), "dpo")
    config = DPOConfig(output_dir=out_dir, seed=seed, data_seed=seed,
                       **{**_COMMON_DEFAULTS, **_device_args(), **args})
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    trainer = DPOTrainer(model=model, args=config, processing_class=tokenizer,
                         train_dataset=_to_dataset(pairs, ["prompt", "chosen", "rejected"]),
                         peft_config=_peft_config(lora), callbacks=callbacks)
    trainer.train()
    return trainer, tokenizer


def _save(trainer, tokenizer, out_dir: Path) -> None:
    """Save (LoRA merged) to a temp folder, then rename: no half-written checkpoint.

    Every process calls it (gathering ZeRO-3's partitioned weights is collective);
    the main one writes, and all leave together, so the others may read `out_dir`."""
    accelerator = trainer.accelerator
    model = trainer.model
    state_dict = None
    if trainer.is_deepspeed_enabled:
        if hasattr(model, "merge_and_unload") and accelerator.state.deepspeed_plugin.zero_stage == 3:
            raise ValueError("train: LoRA under DeepSpeed ZeRO-3 is not supported here (the adapter cannot be "
                             "merged into partitioned weights): use configs/accelerate/zero2.yaml")
        if not hasattr(model, "merge_and_unload"):
            state_dict = accelerator.get_state_dict(trainer.model_wrapped)  # whole weights, ZeRO-3 gathered
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    if accelerator.is_main_process:
        tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
        model.save_pretrained(tmp, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    accelerator.wait_for_everyone()


def _curve(trainer, phase: str) -> list[dict[str, Any]]:
    return [{"phase": phase, "step": h["step"], "loss": round(h["loss"], 4)}
            for h in trainer.state.log_history if "loss" in h]


def train(model_path: str, out_dir: str | Path, cfg: TrainConfig,
          sft_records: pl.DataFrame | None = None, pairs: pl.DataFrame | None = None,
          logger: CurveLogger | None = None) -> dict[str, Any]:
    """Run the configured method(s) and save the checkpoint to `out_dir`.

    Returns {"metrics": {...}, "curve": [...] (loss per logged step), "runtime":
    {...} (seconds and throughput per phase, processes)}; `logger`, if given,
    receives every logged step as it happens (give it to the main process only).
    Under `accelerate launch` every process calls this; see the module's note.
    """
    check_inputs(cfg, world_size(), sft_records, pairs)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {"method": cfg.method}
    curve: list[dict[str, Any]] = []
    runtime: dict[str, Any] = {"processes": world_size()}
    current = model_path

    def callbacks(phase: str, offset: int) -> list:
        return [_last_step_logged(), *([_log_callback(logger, phase, offset, runtime)] if logger is not None else [])]

    with _scratch(out_dir) as scratch:
        if "sft" in cfg.method:
            trainer, tok = train_sft(current, sft_records, f"{scratch}/sft", cfg.sft, cfg.seed, cfg.lora,
                                     callbacks("sft", 0))
            metrics.update(sft_records=sft_records.height, sft_steps=trainer.state.global_step,
                           sft_final_loss=curve_last(trainer))
            curve += _curve(trainer, "sft")
            if "dpo" in cfg.method:
                current = f"{scratch}/sft-model"
                _save(trainer, tok, Path(current))
        if "dpo" in cfg.method:
            trainer, tok = train_dpo(current, pairs, f"{scratch}/dpo", cfg.dpo, cfg.seed, cfg.lora,
                                     callbacks("dpo", metrics.get("sft_steps", 0)))
            metrics.update(dpo_pairs=pairs.height, dpo_steps=trainer.state.global_step,
                           dpo_final_loss=curve_last(trainer))
            curve += _curve(trainer, "dpo")
        _save(trainer, tok, out_dir)
    return {"metrics": metrics, "curve": curve, "runtime": runtime}


@contextmanager
def _scratch(out_dir: Path) -> Iterator[str]:
    """The folder for the trainers' output_dir and the SFT checkpoint that DPO starts
    from (`sft+dpo`), beside `out_dir`; removed at the end. One name for every
    process: the main one creates and removes it, the others read the SFT checkpoint
    there once `_save` has let them go on (one machine, or a shared filesystem)."""
    scratch = out_dir.parent / f".train-{out_dir.name}"
    if is_main_process():
        shutil.rmtree(scratch, ignore_errors=True)  # a killed run's
        scratch.mkdir()
    try:
        yield str(scratch)
    finally:
        if is_main_process():
            shutil.rmtree(scratch, ignore_errors=True)


def curve_last(trainer) -> float | None:
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return round(losses[-1], 4) if losses else None
