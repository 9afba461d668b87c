"""train@<iteration>: SFT and/or DPO through TRL from the iteration's starting checkpoint."""

from pathlib import Path

from honing.artifacts.io import read_artifact
from honing.method.train import TrainConfig, train
from schemas.pairs import PreferencePairs
from schemas.sft import SFTRecords
from stages._live import live
from stages._outputs import write_metrics
from stages._params import iteration_init, load_params, main, stage_block, to_config

STAGE = "train"


def run(argv: list[str]) -> None:
    (iteration,) = argv
    params = load_params(STAGE, iteration)
    block = stage_block(params, STAGE, iteration)
    cfg = to_config(TrainConfig, block, STAGE)
    sft = read_artifact(f"data/{iteration}/build_sft/sft.parquet", SFTRecords) if "sft" in cfg.method else None
    pairs = (read_artifact(f"data/{iteration}/build_pairs/pairs.parquet", PreferencePairs)
             if "dpo" in cfg.method else None)
    with live(f"dvclive/{iteration}/train") as logger:  # the loss curve and TRL's logged figures
        result = train(iteration_init(params, iteration), Path(f"data/{iteration}/train/model"), cfg,
                       sft_records=sft, pairs=pairs, logger=logger)
    # the block as merged with the iteration's override: what this checkpoint was trained with
    write_metrics(f"metrics/{iteration}/train.json", {**result["metrics"], "config": block}, result["runtime"])


if __name__ == "__main__":
    main(run)
