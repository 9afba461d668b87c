"""build_pairs@<iteration>: chosen = best, rejected = worst answer per prompt."""

from honing.io import read_artifact, write_artifact
from honing.pairs import PairsConfig, build_pairs
from honing.prompts import PromptSet
from honing.stage import load_params, main, stage_params, to_config, write_metrics
from schemas.pairs import PreferencePairs
from schemas.prompts import Prompts
from schemas.refinements import Refinements


def run(argv: list[str]) -> None:
    (iteration,) = argv
    params = load_params()
    cfg = to_config(PairsConfig, stage_params("build_pairs", iteration, params), "build_pairs")
    refinements = read_artifact(f"data/{iteration}/refine/refinements.parquet", Refinements)
    prompts = read_artifact("data/prepare/train.parquet", Prompts)
    pairs = build_pairs(refinements, prompts, PromptSet(params["templates"]), cfg, iteration)
    write_artifact(pairs, f"data/{iteration}/build_pairs/pairs.parquet", PreferencePairs)
    write_metrics(f"metrics/{iteration}/build_pairs.json", {
        "pairs": pairs.height,
        "prompts": prompts.height,
        "mean_margin": round(float(pairs["margin"].mean() or 0.0), 4),
    })


if __name__ == "__main__":
    main(run)
