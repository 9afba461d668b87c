"""refine@<iteration>: R rounds of self-refinement, stopping early on "correct"."""

import polars as pl

from honing.artifacts.io import read_artifact, write_artifact
from honing.method.prompts import PromptSet
from honing.method.refine import RefineConfig, refine_rounds
from schemas.candidates import Candidates
from schemas.feedback import Feedback
from schemas.prompts import Prompts
from schemas.refinements import Refinements
from stages._critics import feedback_plan, make_stage_critic
from stages._models import call_figures, make_role
from stages._outputs import write_metrics
from stages._params import iteration_init, load_params, main, stage_block, to_config
from stages._tasks import stage_tasks

STAGE = "refine"


def run(argv: list[str]) -> None:
    (iteration,) = argv
    params = load_params(STAGE, iteration)
    block = stage_block(params, STAGE, iteration)
    critic_spec = block.pop("critic", {"backend": "self"})
    cfg = to_config(RefineConfig, block, STAGE)
    candidates = read_artifact(f"data/{iteration}/generate/candidates.parquet", Candidates)
    feedback = read_artifact(f"data/{iteration}/critique/feedback.parquet", Feedback)
    prompts = read_artifact("data/prepare/train.parquet", Prompts)
    tasks = stage_tasks(prompts, candidates["prompt_id"])
    plan = feedback_plan(params, critic_spec, tasks, mode=cfg.mode)
    rows = feedback.join(candidates.select("id", "prompt", "model"), on="id", how="left", maintain_order="left")
    name = f"{STAGE}@{iteration}"
    policy = make_role("policy", params, stage=name, model=iteration_init(params, iteration))
    critic = make_stage_critic(params, critic_spec, policy, stage=name, plan=plan)
    refinements = refine_rounds(rows, policy, critic, PromptSet(params["templates"]), cfg, iteration,
                                splice=plan.splice)
    write_artifact(refinements, f"data/{iteration}/refine/refinements.parquet", Refinements)
    per_round = refinements.group_by("round").agg(
        pl.len().alias("rows"), (pl.col("verdict") == "correct").sum().alias("judged_correct")).sort("round")
    calls, runtime = call_figures(policy, critic)
    write_metrics(f"metrics/{iteration}/refine.json", {
        "rounds": cfg.rounds,
        "rows_per_round": per_round["rows"].to_list(),
        "judged_correct_per_round": per_round["judged_correct"].to_list(),
        **calls,
    }, runtime)


if __name__ == "__main__":
    main(run)
