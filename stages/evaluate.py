"""evaluate@<checkpoint>: held-out accuracy, directly and with online self-refinement,
after each refinement round. It refines in `refine.mode`: one setting for both. With
`evaluate.judge`, an LLM judge also compares the answers with reference answers
(`honing.method.judge`): a win rate per checkpoint."""

from collections.abc import Mapping
from typing import Any

import polars as pl

from honing.artifacts.io import read_artifact, write_artifact
from honing.calls.roles import Role
from honing.method.evaluate import EvaluateConfig, evaluate
from honing.method.judge import Judge, judge_evaluation, model_references, pool_references
from honing.method.prompts import PromptSet
from honing.method.refine import RefineConfig
from schemas.evaluation import EvaluationRows
from schemas.judgements import Judgements
from schemas.prompts import Prompts
from stages._critics import feedback_plan, make_stage_critic
from stages._models import call_figures, make_role, spend_scope
from stages._outputs import write_metrics
from stages._params import StageError, load_params, main, stage_block, to_config
from stages._tasks import stage_tasks

STAGE = "evaluate"


def run(argv: list[str]) -> None:
    (name,) = argv
    params = load_params(STAGE, name)
    checkpoints = params.get("checkpoints") or {}
    if name not in checkpoints:
        raise StageError(f"params.yaml: no checkpoint {name!r} under `checkpoints:`")
    block = stage_block(params, STAGE)
    if "mode" in block:
        raise StageError("params.yaml `evaluate.mode`: evaluation refines in `refine.mode`; remove evaluate.mode")
    critic_spec = block.pop("critic", {"backend": "self"})
    judge_spec = block.pop("judge", None)  # an LLM judge's win rate against reference answers (null: off)
    # online self-refinement: evaluate's rounds, strategy and max_tokens (the direct answers'
    # too), refine's mode: one way of refining for both stages
    mode = (params.get("refine") or {}).get("mode", RefineConfig.mode)
    own = {key: block.pop(key) for key in ("rounds", "strategy", "max_tokens") if key in block}
    refine = to_config(RefineConfig, {**own, "mode": mode}, STAGE)
    cfg = to_config(EvaluateConfig, {**block, "refine": refine, "max_tokens": refine.max_tokens}, STAGE)
    prompts = read_artifact("data/prepare/eval.parquet", Prompts)
    tasks = stage_tasks(prompts)
    plan = feedback_plan(params, critic_spec, tasks, mode=cfg.refine.mode)
    stage = f"{STAGE}@{name}"
    policy = make_role("policy", params, stage=stage, model=checkpoints[name])
    critic = make_stage_critic(params, critic_spec, policy, stage=stage, plan=plan)
    judge = judge_spec and make_judge(judge_spec, PromptSet(params["templates"]), stage)  # bad params stop here
    rows, metrics = evaluate(prompts, policy, critic, PromptSet(params["templates"]), cfg, name,
                             tasks=tasks, splice=plan.splice)
    write_artifact(rows, f"data/{name}/evaluate/rows.parquet", EvaluationRows)
    calls, runtime = call_figures(policy, critic)
    if judge:
        judgements, metrics["judge"] = judge_checkpoint(*judge, rows, prompts, name, stage)
        write_artifact(judgements, f"data/{name}/evaluate/judgements.parquet", Judgements)
        calls["judge_calls"], runtime["judge_calls"] = judge[0].role.metrics(), judge[0].role.runtime()
    write_metrics(f"metrics/evaluate/{name}.json", {**metrics, **calls}, runtime)


def make_judge(spec: Mapping[str, Any], templates: PromptSet, stage: str) -> tuple[Judge, Any]:
    """`evaluate.judge`: a role block (backend, model, ..., max_tokens) and `reference`:
    `pool` (the prompts' own reference answers, the default) or a reference model's role
    block (its greedy answers, with `max_tokens`)."""
    spec = dict(spec)
    reference = spec.pop("reference", "pool")
    if reference != "pool" and not isinstance(reference, Mapping):
        raise StageError(f"params.yaml `{STAGE}.judge.reference`: expected pool or a role block "
                         f"({{backend: ..., model: ...}}), found {reference!r}")
    return Judge.from_params(spec, templates, scope=spend_scope(stage), params_path=f"{STAGE}.judge"), reference


def judge_checkpoint(judge: Judge, reference: Any, rows: pl.DataFrame, prompts: pl.DataFrame, name: str,
                     stage: str) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The checkpoint's answers, direct and refined, against the reference answers."""
    evaluated = prompts.filter(pl.col("id").is_in(rows["prompt_id"].unique().implode()))
    if reference == "pool":
        references, source = pool_references(evaluated), "pool"
    else:
        spec = dict(reference)
        max_tokens = int(spec.pop("max_tokens", 512))
        role = Role.from_params("reference", spec, scope=spend_scope(stage), params_path=f"{STAGE}.judge.reference")
        references, source = model_references(evaluated, role, judge.templates, max_tokens), role.model_id
    judgements, metrics = judge_evaluation(rows, evaluated, references, judge, name)
    return judgements, {"reference": source, **metrics}


if __name__ == "__main__":
    main(run)
