"""The run in a few numbers: what `dvc exp show` should put side by side.

One small dict, nested one level by checkpoint, so `dvc exp show` lists columns
such as `it2.accuracy_direct`, `it2.refinement_gain`, `it1.kept`, `it1.pairs`,
beside `tokens` and `cost_usd` for the whole run. Every figure is read from a
stage's metrics file; nothing here is measured anew.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# the last phase's final loss, whichever phases the training had
FINAL_LOSS_KEYS = ("dpo_final_loss", "sft_final_loss", "checks_final_loss")


def call_totals(metrics: Iterable[Mapping[str, Any]]) -> tuple[int, float]:
    """(tokens, cost in USD) over every stage's model calls: the `calls` block of each
    metrics file and any other block named `*calls` (a critic's own, `critic_calls`)."""
    tokens, cost = 0, 0.0
    for m in metrics:
        for key, block in m.items():
            if key.endswith("calls") and isinstance(block, Mapping) and "prompt_tokens" in block:
                tokens += int(block.get("prompt_tokens", 0)) + int(block.get("completion_tokens", 0))
                cost += float(block.get("cost_usd") or 0.0)
    return tokens, round(cost, 6)


def run_summary(checkpoints: list[str], evaluations: Mapping[str, Mapping[str, Any]],
                stage_metrics: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """`evaluations`: checkpoint -> metrics/evaluate/<ck>.json. `stage_metrics`: the
    other metrics files by their path under metrics/ without `.json` (`meta_corpus`,
    `train_meta`, `it1/filter`, ...)."""
    summary: dict[str, Any] = {}
    for ck in checkpoints:
        ev = evaluations[ck]
        entry: dict[str, Any] = {key: ev[key] for key in ("accuracy_direct", "accuracy_refined", "refinement_gain")}
        entry.update({key: ev[key] for key in ("critic_recall_wrong", "critic_false_alarm_rate", "critic_score_auc")
                      if ev.get(key) is not None})
        for key, stage, field in (("kept", "filter", "kept"), ("sft_records", "build_sft", "records"),
                                  ("pairs", "build_pairs", "pairs")):
            if field in stage_metrics.get(f"{ck}/{stage}", {}):
                entry[key] = stage_metrics[f"{ck}/{stage}"][field]
        # the training that made the checkpoint: train@<it>, or the base/train_meta stage
        training = stage_metrics.get(f"{ck}/train") or stage_metrics.get(ck) or {}
        loss = next((training[k] for k in FINAL_LOSS_KEYS if training.get(k) is not None), None)
        if loss is not None:
            entry["final_loss"] = loss
        summary[ck] = entry
    summary["tokens"], summary["cost_usd"] = call_totals([*stage_metrics.values(), *evaluations.values()])
    return summary
