"""build_pairs@<iteration>: chosen = best, rejected = worst answer per prompt."""

from honing.artifacts.io import read_artifact, write_artifact
from honing.method.pairs import PairsConfig, build_pairs
from honing.method.prompts import PromptSet
from schemas.pairs import PreferencePairs
from schemas.prompts import Prompts
from schemas.refinements import Refinements
from stages._outputs import write_metrics
from stages._params import load_params, main, stage_block, to_config
from stages._tasks import stage_tasks

STAGE = "build_pairs"


def run(argv: list[str]) -> None:
    (iteration,) = argv
    params = load_params(STAGE, iteration)
    cfg = to_config(PairsConfig, stage_block(params, STAGE, iteration), STAGE)
    refinements = read_artifact(f"data/{iteration}/refine/refinements.parquet", Refinements)
    prompts = read_artifact("data/prepare/train.parquet", Prompts)
    pairs = build_pairs(refinements, prompts, PromptSet(params["templates"]), cfg, iteration,
                        tasks=stage_tasks(prompts))
    write_artifact(pairs, f"data/{iteration}/build_pairs/pairs.parquet", PreferencePairs)
    write_metrics(f"metrics/{iteration}/build_pairs.json", {
        "pairs": pairs.height,
        "prompts": prompts.height,
        "mean_margin": round(float(pairs["margin"].mean() or 0.0), 4),
    })


if __name__ == "__main__":
    main(run)
