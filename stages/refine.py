"""refine@<iteration>: R rounds of self-refinement, stopping early on "correct"."""

import polars as pl

from honing.io import read_artifact, write_artifact
from honing.prompts import PromptSet
from honing.refine import RefineConfig, refine_rounds
from honing.stage import (
    critic_metrics,
    iteration_init,
    load_params,
    main,
    make_role,
    make_stage_critic,
    stage_params,
    to_config,
    write_metrics,
)
from schemas.candidates import Candidates
from schemas.feedback import Feedback
from schemas.refinements import Refinements


def run(argv: list[str]) -> None:
    (iteration,) = argv
    params = load_params()
    block = stage_params("refine", iteration, params)
    critic_spec = block.pop("critic", {"backend": "self"})
    cfg = to_config(RefineConfig, {**block, "feedback_format": params["feedback_format"]}, "refine")
    candidates = read_artifact(f"data/{iteration}/generate/candidates.parquet", Candidates)
    feedback = read_artifact(f"data/{iteration}/critique/feedback.parquet", Feedback)
    rows = feedback.join(candidates.select("id", "prompt", "model"), on="id", how="left", maintain_order="left")
    templates = PromptSet(params["templates"])
    policy = make_role("policy", params, model=iteration_init(params, iteration))
    critic = make_stage_critic(params, critic_spec, policy)
    refinements = refine_rounds(rows, policy, critic, templates, cfg, iteration)
    write_artifact(refinements, f"data/{iteration}/refine/refinements.parquet", Refinements)
    per_round = refinements.group_by("round").agg(
        pl.len().alias("rows"), (pl.col("verdict") == "correct").sum().alias("judged_correct")).sort("round")
    write_metrics(f"metrics/{iteration}/refine.json", {
        "rounds": cfg.rounds,
        "rows_per_round": per_round["rows"].to_list(),
        "judged_correct_per_round": per_round["judged_correct"].to_list(),
        **policy.metrics(),
        **critic_metrics(critic, policy),
    })


if __name__ == "__main__":
    main(run)
