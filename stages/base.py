"""base: the initial policy. `source: micro` pretrains the micro world's tiny model
from scratch on CPU; any other source (a Hub id, a checkpoint folder, a .gguf file,
package:<name>) is loaded, checked and saved as the pipeline's base checkpoint."""

from dataclasses import fields
from pathlib import Path

from honing.artifacts.checkpoints import CheckpointConfig, CheckpointError, import_checkpoint
from honing.method.prompts import PromptSet
from honing.micro.pretrain import PretrainConfig, pretrain
from honing.progress import StepProgress
from stages._live import live, no_curve
from stages._outputs import write_metrics
from stages._params import StageError, load_params, main, stage_block, to_config

OUT = Path("data/base/model")
LIVE = Path("dvclive/base")
RUNTIME_KEYS = ("seconds", "tokens_per_second", "load_seconds", "save_seconds")


def run(argv: list[str]) -> None:
    params = load_params("base")
    block = stage_block(params, "base")
    # One block serves both kinds of base; each ignores the other's keys.
    checkpoint_keys = {f.name for f in fields(CheckpointConfig)}
    micro_keys = {f.name for f in fields(PretrainConfig)}
    if block.get("source", "micro") != "micro":
        cfg = to_config(CheckpointConfig, {k: v for k, v in block.items() if k not in micro_keys}, "base")
        try:
            figures = import_checkpoint(cfg, OUT)
        except CheckpointError as e:
            raise StageError(f"base: {e}") from e
        write_metrics("metrics/base.json", *split_runtime(figures))
        no_curve(LIVE)  # taken as it is: nothing trained here
        return
    cfg = to_config(PretrainConfig, {k: v for k, v in block.items() if k not in checkpoint_keys}, "base")
    with StepProgress("base pretraining") as progress, live(LIVE) as logger:
        result = pretrain(OUT, cfg, PromptSet(params["templates"]), progress=progress, logger=logger)
    write_metrics("metrics/base.json", *split_runtime(result["metrics"]))


def split_runtime(figures: dict) -> tuple[dict, dict]:
    """(what the data determines, what varies from run to run)."""
    return ({k: v for k, v in figures.items() if k not in RUNTIME_KEYS},
            {k: v for k, v in figures.items() if k in RUNTIME_KEYS})


if __name__ == "__main__":
    main(run)
