"""filter@<iteration>: rule check against the reference, score, reward model,
self-consistency, length and duplicate rules on each candidate's final answer. Every
row is kept in the output with its reason; `kept` says which ones go on.

It streams: refinements and prompts are read a few row groups at a time, cut into
frames of whole prompts, and the filtered rows written as they come, so memory stays
flat however large the pool (refinements out of prompt order are filtered in memory)."""

import polars as pl

from honing.artifacts.io import grouped, in_memory_if_unsorted, lookup, read_batches, write_batches
from honing.method.filters import FilterConfig, FilterTally, filter_stream, finals_columns
from honing.method.prompts import PromptSet
from honing.method.reward import RewardModel, RewardModelConfig, reward_values
from schemas.filtered import Filtered
from schemas.prompts import Prompts
from schemas.refinements import Refinements
from stages._outputs import write_metrics
from stages._params import StageError, load_params, main, stage_block, to_config
from stages._tasks import stage_tasks

STAGE = "filter"
PROMPTS = "data/prepare/train.parquet"


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
    refinements_path = f"data/{iteration}/refine/refinements.parquet"
    tasks = stage_tasks(pl.concat(b.select(pl.col("task").unique()) for b in read_batches(PROMPTS, Prompts,
                                                                                           columns=["task"])))
    reward, runtime = None, None
    if reward_cfg:
        model, templates = RewardModel(reward_cfg), PromptSet(params["templates"])
        reward = lambda finals: reward_values(finals, templates, model)  # noqa: E731

    def filtered(in_memory: bool) -> dict:
        refinements = read_batches(refinements_path, Refinements, columns=finals_columns(reward is not None),
                                   in_memory=in_memory)
        prompts = read_batches(PROMPTS, Prompts, columns=tasks.row_columns(), in_memory=in_memory)
        chunks = lookup(grouped(refinements, "prompt_id", in_memory=in_memory), "prompt_id", prompts,
                        in_memory=in_memory)
        tally = FilterTally(cfg)
        write_batches(map(tally.add, filter_stream(chunks, cfg, iteration, tasks=tasks, reward=reward)),
                      f"data/{iteration}/filter/filtered.parquet", Filtered)
        return tally.metrics()

    metrics = in_memory_if_unsorted(filtered)
    if reward_cfg:
        metrics["reward_model"] = {"model": model.model_id, **model.metrics()}
        runtime = {"reward_model": model.runtime()}
    write_metrics(f"metrics/{iteration}/filter.json", metrics, runtime)


if __name__ == "__main__":
    main(run)
