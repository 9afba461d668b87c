"""evaluate@<checkpoint>: held-out accuracy, directly and with online self-refinement,
after each refinement round. It refines in `refine.mode`: one setting for both."""

from honing.artifacts.io import read_artifact, write_artifact
from honing.method.evaluate import EvaluateConfig, evaluate
from honing.method.prompts import PromptSet
from honing.method.refine import RefineConfig
from schemas.evaluation import EvaluationRows
from schemas.prompts import Prompts
from stages._critics import feedback_plan, make_stage_critic
from stages._models import call_figures, make_role
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
    rows, metrics = evaluate(prompts, policy, critic, PromptSet(params["templates"]), cfg, name,
                             tasks=tasks, splice=plan.splice)
    write_artifact(rows, f"data/{name}/evaluate/rows.parquet", EvaluationRows)
    calls, runtime = call_figures(policy, critic)
    write_metrics(f"metrics/evaluate/{name}.json", {**metrics, **calls}, runtime)


if __name__ == "__main__":
    main(run)
