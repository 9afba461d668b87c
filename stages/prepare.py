"""prepare: prompt pools -> data/prepare/{meta,train,eval,quarantine}.parquet, metrics/prepare.json."""

from __future__ import annotations

from pathlib import Path

from honing import stage
from honing.io import write_artifact
from honing.prepare import PrepareConfig, prepare
from schemas.prompts import Prompts
from schemas.quarantine import Quarantine

OUT = Path("data/prepare")
METRICS = Path("metrics/prepare.json")


def run(argv: list[str]) -> None:
    try:
        cfg = stage.to_config(PrepareConfig, stage.stage_params("prepare"), "prepare")
    except (TypeError, ValueError) as e:
        raise stage.StageError(f"params.yaml `prepare`: {e}") from e
    result = prepare(cfg)
    for split in ("meta", "train", "eval"):
        write_artifact(getattr(result, split), OUT / f"{split}.parquet", Prompts)
    write_artifact(result.quarantine, OUT / "quarantine.parquet", Quarantine, id_column="row_id")
    stage.write_metrics(METRICS, result.metrics)


if __name__ == "__main__":
    stage.main(run)
