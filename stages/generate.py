"""generate@<iteration>: k answers per prompt from the iteration's starting checkpoint."""

from honing.generate import GenerateConfig, generate_candidates
from honing.io import read_artifact, write_artifact
from honing.prompts import PromptSet
from honing.stage import (
    iteration_init,
    load_params,
    main,
    make_role,
    stage_params,
    to_config,
    write_metrics,
)
from schemas.candidates import Candidates
from schemas.prompts import Prompts


def run(argv: list[str]) -> None:
    (iteration,) = argv
    params = load_params()
    cfg = to_config(GenerateConfig, stage_params("generate", iteration, params), "generate")
    prompts = read_artifact("data/prepare/train.parquet", Prompts)
    policy = make_role("policy", params, model=iteration_init(params, iteration))
    candidates = generate_candidates(prompts, policy, PromptSet(params["templates"]), cfg, iteration)
    write_artifact(candidates, f"data/{iteration}/generate/candidates.parquet", Candidates)
    write_metrics(f"metrics/{iteration}/generate.json", {
        "prompts": candidates["prompt_id"].n_unique(),
        "candidates": candidates.height,
        "truncated": int((candidates["finish_reason"] == "length").sum()),
        **policy.metrics(),
    })


if __name__ == "__main__":
    main(run)
