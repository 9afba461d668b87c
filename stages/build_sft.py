"""build_sft@<iteration>: SFT records (TRL prompt/completion) from the kept answers."""

from honing.artifacts.io import read_artifact, write_artifact
from honing.method.prompts import PromptSet
from honing.method.sft import BuildSFTConfig, iteration_records
from schemas.filtered import Filtered
from schemas.prompts import Prompts
from schemas.refinements import Refinements
from schemas.sft import SFTRecords
from stages._outputs import write_metrics
from stages._params import load_params, main, stage_block, to_config
from stages._tasks import stage_tasks

STAGE = "build_sft"


def run(argv: list[str]) -> None:
    (iteration,) = argv
    params = load_params(STAGE, iteration)
    cfg = to_config(BuildSFTConfig, stage_block(params, STAGE, iteration), STAGE)
    filtered = read_artifact(f"data/{iteration}/filter/filtered.parquet", Filtered)
    refinements = read_artifact(f"data/{iteration}/refine/refinements.parquet", Refinements)
    prompts = read_artifact("data/prepare/train.parquet", Prompts)
    records = iteration_records(filtered, refinements, prompts, PromptSet(params["templates"]), cfg, iteration,
                                tasks=stage_tasks(prompts))
    write_artifact(records, f"data/{iteration}/build_sft/sft.parquet", SFTRecords)
    by_kind = dict(records.group_by("kind").len().sort("kind").iter_rows())
    write_metrics(f"metrics/{iteration}/build_sft.json", {"records": records.height, "by_kind": by_kind})


if __name__ == "__main__":
    main(run)
