"""build_pairs@<iteration>: chosen = best, rejected = worst answer per prompt, by the
signal `build_pairs.signal` names. The computed signals need their scorer here:
`reward_model: {model: ...}` for reward, `judge: {backend: ..., model: ...}` for judge.

It streams for the signals read off the rows (rule, score, rule+score) and for
self_consistency (computed a frame of whole prompts at a time): refinements and
prompts are read a few row groups at a time and the pairs written as they come, so
memory stays flat however large the pool. The model-scored signals (reward, judge)
and refinements out of prompt order run in memory."""

import math
from typing import Any

import polars as pl

from honing.artifacts.io import (
    grouped,
    in_memory_if_unsorted,
    lookup,
    read_artifact,
    read_batches,
    write_artifact,
    write_batches,
)
from honing.method.judge import Judge, judge_metrics, judge_values
from honing.method.pairs import PairsConfig, build_pairs, check_config, pair_stream
from honing.method.prompts import PromptSet
from honing.method.reward import RewardModel, RewardModelConfig, reward_values
from honing.method.signals import self_consistency_values
from honing.tasks.base import Tasks
from schemas.pairs import PreferencePairs
from schemas.prompts import Prompts
from schemas.refinements import Refinements
from stages._models import spend_scope
from stages._outputs import write_metrics
from stages._params import StageError, load_params, main, stage_block, to_config
from stages._tasks import stage_tasks

STAGE = "build_pairs"
PROMPTS = "data/prepare/train.parquet"
COLUMNS = ["id", "candidate_id", "prompt_id", "prompt", "round", "response", "score"]


def computed_values(signal: str, scorers: dict[str, Any], refinements: pl.DataFrame, prompts: pl.DataFrame,
                    templates: PromptSet, tasks: Tasks, stage: str) -> tuple[dict | None, dict, dict]:
    """(values, metrics, runtime) of a computed signal; (None, {}, {}) for the others."""
    if signal == "self_consistency":
        return self_consistency_values(refinements, prompts, tasks), {}, {}
    if signal not in ("reward", "judge"):
        return None, {}, {}
    key = {"reward": "reward_model", "judge": "judge"}[signal]
    if not scorers.get(key):
        raise StageError(f"params.yaml `{STAGE}.{key}`: signal {signal!r} needs it "
                         f"({'{model: <path or hub id>}' if signal == 'reward' else '{backend: ..., model: ...}'})")
    if signal == "reward":
        model = RewardModel(to_config(RewardModelConfig, scorers[key], f"{STAGE}.{key}"))
        values = reward_values(refinements, templates, model)
        return values, {"reward_model": {"model": model.model_id, **model.metrics()}}, \
            {"reward_model": model.runtime()}
    judge = Judge.from_params(scorers[key], templates, scope=spend_scope(stage), params_path=f"{STAGE}.{key}")
    values, judgements = judge_values(refinements, judge)
    return values, {"judge": judge_metrics(judgements), "judge_calls": judge.role.metrics()}, \
        {"judge_calls": judge.role.runtime()}


def run(argv: list[str]) -> None:
    (iteration,) = argv
    params = load_params(STAGE, iteration)
    block = stage_block(params, STAGE, iteration)
    scorers = {key: block.pop(key, None) for key in ("reward_model", "judge")}
    cfg = to_config(PairsConfig, block, STAGE)
    check_config(cfg)
    refinements_path = f"data/{iteration}/refine/refinements.parquet"
    out, metrics_path = f"data/{iteration}/build_pairs/pairs.parquet", f"metrics/{iteration}/build_pairs.json"
    templates = PromptSet(params["templates"])
    if cfg.signal in ("reward", "judge"):  # the model scores every row first: in memory
        refinements = read_artifact(refinements_path, Refinements)
        prompts = read_artifact(PROMPTS, Prompts)
        tasks = stage_tasks(prompts)
        values, signal_metrics, runtime = computed_values(cfg.signal, scorers, refinements, prompts, templates,
                                                          tasks, f"{STAGE}@{iteration}")
        pairs = build_pairs(refinements, prompts, templates, cfg, iteration, tasks=tasks, values=values)
        write_artifact(pairs, out, PreferencePairs)
        write_metrics(metrics_path, {"pairs": pairs.height, "prompts": prompts.height,
                                     "mean_margin": round(float(pairs["margin"].mean() or 0.0), 4),
                                     **signal_metrics}, runtime)
        return
    tasks = stage_tasks(pl.concat(b.select(pl.col("task").unique()) for b in read_batches(PROMPTS, Prompts,
                                                                                           columns=["task"])))

    def written(in_memory: bool) -> tuple[int, float]:
        def chunks():
            rows = grouped(read_batches(refinements_path, Refinements, columns=COLUMNS, in_memory=in_memory),
                           "prompt_id", sorted_by=["candidate_id"], in_memory=in_memory)
            return lookup(rows, "prompt_id", read_batches(PROMPTS, Prompts, columns=tasks.row_columns(),
                                                          in_memory=in_memory), in_memory=in_memory)

        margins: list[float] = []  # one exact sum per frame

        def count(frame: pl.DataFrame) -> pl.DataFrame:
            margins.append(math.fsum(frame.get_column("margin").to_list()))
            return frame

        n = write_batches(map(count, pair_stream(chunks, templates, cfg, iteration, tasks=tasks)), out,
                          PreferencePairs)
        return n, math.fsum(margins)

    n, margin = in_memory_if_unsorted(written)
    write_metrics(metrics_path, {
        "pairs": n,
        "prompts": pl.scan_parquet(PROMPTS).select(pl.len()).collect().item(),
        "mean_margin": round(margin / n if n else 0.0, 4),
    })


if __name__ == "__main__":
    main(run)
