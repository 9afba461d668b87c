"""generate@<iteration>: k answers per prompt from the iteration's starting checkpoint."""

from honing.artifacts.io import read_artifact, write_artifact
from honing.method.generate import GenerateConfig, generate_candidates
from honing.method.prompts import PromptSet
from schemas.candidates import Candidates
from schemas.prompts import Prompts
from stages._models import call_figures, make_role
from stages._outputs import write_metrics
from stages._params import iteration_init, load_params, main, stage_block, to_config

STAGE = "generate"


def run(argv: list[str]) -> None:
    (iteration,) = argv
    params = load_params(STAGE, iteration)
    cfg = to_config(GenerateConfig, stage_block(params, STAGE, iteration), STAGE)
    prompts = read_artifact("data/prepare/train.parquet", Prompts)
    policy = make_role("policy", params, stage=f"{STAGE}@{iteration}", model=iteration_init(params, iteration))
    candidates = generate_candidates(prompts, policy, PromptSet(params["templates"]), cfg, iteration)
    write_artifact(candidates, f"data/{iteration}/generate/candidates.parquet", Candidates)
    calls, runtime = call_figures(policy)
    write_metrics(f"metrics/{iteration}/generate.json", {
        "prompts": candidates["prompt_id"].n_unique(),
        "candidates": candidates.height,
        "truncated": int((candidates["finish_reason"] == "length").sum()),
        **calls,
    }, runtime)


if __name__ == "__main__":
    main(run)
