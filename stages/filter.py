"""filter@<iteration>: rule check against the reference, score, reward model,
self-consistency, length and duplicate rules on each candidate's final answer. Every
row is kept in the output with its reason; `kept` says which ones go on."""

from honing.artifacts.io import read_artifact, write_artifact
from honing.method.filters import (
    FilterConfig,
    filter_answers,
    filter_metrics,
    final_answers,
)
from honing.method.prompts import PromptSet
from honing.method.reward import RewardModel, RewardModelConfig, reward_values
from schemas.filtered import Filtered
from schemas.prompts import Prompts
from schemas.refinements import Refinements
from stages._outputs import write_metrics
from stages._params import StageError, load_params, main, stage_block, to_config
from stages._tasks import stage_tasks

STAGE = "filter"


def run(argv: list[str]) -> None:
    (iteration,) = argv
    params = load_params(STAGE, iteration)
    block = stage_block(params, STAGE, iteration)
    reward_spec = block.pop("reward_model", None)  # {model, min_reward, batch_size, ...} or null
    if "min_reward" in block:
        raise StageError(f"params.yaml `{STAGE}.min_reward`: the threshold goes with its model, "
                         f"`{STAGE}.reward_model: {{model: ..., min_reward: ...}}`")
    reward_cfg = reward_spec and to_config(RewardModelConfig, reward_spec, f"{STAGE}.reward_model")
    cfg = to_config(FilterConfig, {**block, "min_reward": reward_cfg and reward_cfg.min_reward}, STAGE)
    prompts = read_artifact("data/prepare/train.parquet", Prompts)
    refinements = read_artifact(f"data/{iteration}/refine/refinements.parquet", Refinements)
    finals = final_answers(refinements)
    rewards, runtime = None, None
    if reward_cfg:
        model = RewardModel(reward_cfg)
        rewards = reward_values(finals, PromptSet(params["templates"]), model)
        runtime = {"reward_model": model.runtime()}
    filtered = filter_answers(finals, prompts, cfg, iteration, tasks=stage_tasks(prompts), rewards=rewards)
    write_artifact(filtered, f"data/{iteration}/filter/filtered.parquet", Filtered)
    metrics = filter_metrics(filtered, cfg)
    if reward_cfg:
        metrics["reward_model"] = {"model": model.model_id, **model.metrics()}
    write_metrics(f"metrics/{iteration}/filter.json", metrics, runtime)


if __name__ == "__main__":
    main(run)
