"""evaluate@<checkpoint>: held-out accuracy, directly and with online self-refinement,
after each refinement round."""

from honing.evaluate import EvaluateConfig, evaluate
from honing.io import read_artifact, write_artifact
from honing.prompts import PromptSet
from honing.stage import (
    StageError,
    critic_metrics,
    load_params,
    main,
    make_role,
    make_stage_critic,
    stage_params,
    to_config,
    write_metrics,
)
from schemas.evaluation import EvaluationRows
from schemas.prompts import Prompts


def run(argv: list[str]) -> None:
    (name,) = argv
    params = load_params()
    checkpoints = params.get("checkpoints") or {}
    if name not in checkpoints:
        raise StageError(f"params.yaml: no checkpoint {name!r} under `checkpoints:`")
    block = stage_params("evaluate", params=params)
    critic_spec = block.pop("critic", {"backend": "self"})
    cfg = to_config(EvaluateConfig, {**block, "feedback_format": params["feedback_format"]}, "evaluate")
    templates = PromptSet(params["templates"])
    prompts = read_artifact("data/prepare/eval.parquet", Prompts)
    policy = make_role("policy", params, model=checkpoints[name])
    critic = make_stage_critic(params, critic_spec, policy)
    rows, metrics = evaluate(prompts, policy, critic, templates, cfg, name)
    write_artifact(rows, f"data/{name}/evaluate/rows.parquet", EvaluationRows)
    write_metrics(f"metrics/evaluate/{name}.json", {**metrics, "calls": policy.metrics(),
                                                         **critic_metrics(critic, policy)})


if __name__ == "__main__":
    main(run)
