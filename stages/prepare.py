"""prepare: prompt pools -> data/prepare/{meta,train,eval,quarantine}.parquet, metrics/prepare.json."""

from __future__ import annotations

from pathlib import Path

from honing.artifacts.io import write_artifact
from honing.artifacts.prepare import PrepareConfig, prepare
from schemas.prompts import Prompts
from schemas.quarantine import Quarantine
from stages._outputs import write_metrics
from stages._params import load_params, main, stage_block, to_config

OUT = Path("data/prepare")


def run(argv: list[str]) -> None:
    cfg = to_config(PrepareConfig, stage_block(load_params("prepare"), "prepare"), "prepare")
    result = prepare(cfg, Prompts)
    for split in ("meta", "train", "eval"):
        write_artifact(getattr(result, split), OUT / f"{split}.parquet", Prompts)
    write_artifact(result.quarantine, OUT / "quarantine.parquet", Quarantine, id_column="row_id")
    write_metrics("metrics/prepare.json", result.metrics)


if __name__ == "__main__":
    main(run)
