"""train@<iteration>: SFT and/or DPO through TRL from the iteration's starting checkpoint.

With `train.launch: {num_processes: N}` the stage runs itself under `accelerate
launch` (stages/_launch.py); only the main process writes."""

from contextlib import nullcontext
from pathlib import Path

from honing.artifacts.io import read_artifact
from honing.method.train import TrainConfig, check_inputs, is_main_process, train
from schemas.pairs import PreferencePairs
from schemas.sft import SFTRecords
from stages._launch import launch_config, relaunch
from stages._live import live
from stages._outputs import write_metrics
from stages._params import iteration_init, load_params, main, stage_block, to_config

STAGE = "train"


def run(argv: list[str]) -> None:
    (iteration,) = argv
    params = load_params(STAGE, iteration)
    block = stage_block(params, STAGE, iteration)
    launch = launch_config(block.pop("launch", None), f"{STAGE}.launch")  # how to train, not what
    cfg = to_config(TrainConfig, block, STAGE)
    sft = read_artifact(f"data/{iteration}/build_sft/sft.parquet", SFTRecords) if "sft" in cfg.method else None
    pairs = (read_artifact(f"data/{iteration}/build_pairs/pairs.parquet", PreferencePairs)
             if "dpo" in cfg.method else None)
    check_inputs(cfg, launch.num_processes, sft, pairs)  # here, before any process is launched
    if relaunch(launch, "stages.train", argv):
        return  # the launched processes trained and wrote the outputs
    main_process = is_main_process()
    # the loss curve and TRL's logged figures
    with live(f"dvclive/{iteration}/train") if main_process else nullcontext() as logger:
        result = train(iteration_init(params, iteration), Path(f"data/{iteration}/train/model"), cfg,
                       sft_records=sft, pairs=pairs, logger=logger)
    if main_process:
        # the block as merged with the iteration's override: what this checkpoint was trained with
        write_metrics(f"metrics/{iteration}/train.json", {**result["metrics"], "config": block}, result["runtime"])


if __name__ == "__main__":
    main(run)
