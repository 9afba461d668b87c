"""build_sft@<iteration>: SFT records (TRL prompt/completion) from the kept answers."""

from honing.io import read_artifact, write_artifact
from honing.prompts import PromptSet
from honing.sft import BuildSFTConfig, iteration_records
from honing.stage import load_params, main, stage_params, to_config, write_metrics
from schemas.filtered import Filtered
from schemas.prompts import Prompts
from schemas.refinements import Refinements
from schemas.sft import SFTRecords


def run(argv: list[str]) -> None:
    (iteration,) = argv
    params = load_params()
    cfg = to_config(BuildSFTConfig, stage_params("build_sft", iteration, params), "build_sft")
    filtered = read_artifact(f"data/{iteration}/filter/filtered.parquet", Filtered)
    refinements = read_artifact(f"data/{iteration}/refine/refinements.parquet", Refinements)
    prompts = read_artifact("data/prepare/train.parquet", Prompts)
    records = iteration_records(filtered, refinements, prompts, PromptSet(params["templates"]), cfg, iteration)
    write_artifact(records, f"data/{iteration}/build_sft/sft.parquet", SFTRecords)
    write_metrics(f"metrics/{iteration}/build_sft.json",
               {"records": records.height, "by_kind": dict(records.group_by("kind").len().sort("kind").iter_rows())})


if __name__ == "__main__":
    main(run)
