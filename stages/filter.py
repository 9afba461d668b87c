"""filter@<iteration>: rule check against the reference, score, length and duplicate
rules on each candidate's final answer. Every row is kept in the output with its
reason; `kept` says which ones go on."""

from honing.artifacts.io import read_artifact, write_artifact
from honing.method.filters import (
    FilterConfig,
    filter_answers,
    filter_metrics,
    final_answers,
)
from schemas.filtered import Filtered
from schemas.prompts import Prompts
from schemas.refinements import Refinements
from stages._outputs import write_metrics
from stages._params import load_params, main, stage_block, to_config
from stages._tasks import stage_tasks

STAGE = "filter"


def run(argv: list[str]) -> None:
    (iteration,) = argv
    cfg = to_config(FilterConfig, stage_block(load_params(STAGE, iteration), STAGE, iteration), STAGE)
    prompts = read_artifact("data/prepare/train.parquet", Prompts)
    refinements = read_artifact(f"data/{iteration}/refine/refinements.parquet", Refinements)
    filtered = filter_answers(final_answers(refinements), prompts, cfg, iteration, tasks=stage_tasks(prompts))
    write_artifact(filtered, f"data/{iteration}/filter/filtered.parquet", Filtered)
    write_metrics(f"metrics/{iteration}/filter.json", filter_metrics(filtered))


if __name__ == "__main__":
    main(run)
