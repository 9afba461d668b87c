"""build_pairs@<iteration>: chosen = best, rejected = worst answer per prompt, by the
signal `build_pairs.signal` names. The computed signals need their scorer here:
`reward_model: {model: ...}` for reward, `judge: {backend: ..., model: ...}` for judge."""

from typing import Any

import polars as pl

from honing.artifacts.io import read_artifact, write_artifact
from honing.method.judge import Judge, judge_metrics, judge_values
from honing.method.pairs import PairsConfig, build_pairs
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
    refinements = read_artifact(f"data/{iteration}/refine/refinements.parquet", Refinements)
    prompts = read_artifact("data/prepare/train.parquet", Prompts)
    templates, tasks = PromptSet(params["templates"]), stage_tasks(prompts)
    values, signal_metrics, runtime = computed_values(cfg.signal, scorers, refinements, prompts, templates, tasks,
                                                      f"{STAGE}@{iteration}")
    pairs = build_pairs(refinements, prompts, templates, cfg, iteration, tasks=tasks, values=values)
    write_artifact(pairs, f"data/{iteration}/build_pairs/pairs.parquet", PreferencePairs)
    write_metrics(f"metrics/{iteration}/build_pairs.json", {
        "pairs": pairs.height,
        "prompts": prompts.height,
        "mean_margin": round(float(pairs["margin"].mean() or 0.0), 4),
        **signal_metrics,
    }, runtime)


if __name__ == "__main__":
    main(run)
