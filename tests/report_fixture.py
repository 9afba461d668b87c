"""A small project folder as the pipeline leaves it, for the report, inspect and
compare tests: metrics of every stage, dvclive curves, evaluation rows of three
checkpoints (base, train_meta, it1) over two refinement rounds, and the evaluation
prompts. Numbers are made up but consistent (accuracies follow the rows)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

CHECKPOINTS = ["base", "train_meta", "it1"]
ROUNDS = 2
PROMPTS = 12

# per checkpoint: which prompts are right after round 0, 1, 2
RIGHT = {
    "base": [{0, 1, 2}, {0, 1, 2, 3, 4, 5}, {0, 1, 2, 3, 4, 5, 6}],
    "train_meta": [{0, 1, 2, 3, 4, 5, 6, 7}, {0, 1, 2, 3, 4, 5, 6, 7, 8}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}],
    "it1": [{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}],
}


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def prompt_id(i: int) -> str:
    return f"p{i:02d}"


def eval_prompts() -> pl.DataFrame:
    return pl.DataFrame({
        "id": [prompt_id(i) for i in range(PROMPTS)],
        "prompt": [f"Ann has {10 + i} coins . Ann gets {i} more . How many coins does Ann have ?"
                   for i in range(PROMPTS)],
        "reference": [None] * PROMPTS,
        "answer": [str(10 + 2 * i) for i in range(PROMPTS)],
        "task": ["micro"] * PROMPTS,
        "metadata": [None] * PROMPTS,
        "source": ["micro"] * PROMPTS,
        "split": ["eval"] * PROMPTS,
    })


def evaluation_rows(ck: str) -> pl.DataFrame:
    rows = []
    for rnd in range(ROUNDS + 1):
        for i in range(PROMPTS):
            right = i in RIGHT[ck][rnd]
            value = 10 + 2 * i if right else 10 + 2 * i + 10  # a wrong answer stays the same wrong answer
            response = f"Step 1 : {10 + i} + {i} = {value} ;\nAnswer : {value}"
            rows.append({"id": f"{prompt_id(i)}@{rnd}", "prompt_id": prompt_id(i), "round": rnd,
                         "response": response, "verdict": "correct" if right else "incorrect",
                         "score": 9 if right else 3, "correct": right, "model": f"data/{ck}/model", "iteration": ck})
    return pl.DataFrame(rows, schema={"id": pl.String, "prompt_id": pl.String, "round": pl.Int64,
                                      "response": pl.String, "verdict": pl.String, "score": pl.Int64,
                                      "correct": pl.Boolean,
                                      "model": pl.String, "iteration": pl.String})


def evaluation_metrics(ck: str) -> dict:
    acc = [round(len(RIGHT[ck][r]) / PROMPTS, 4) for r in range(ROUNDS + 1)]
    first, last = RIGHT[ck][0], RIGHT[ck][ROUNDS]
    return {
        "accuracy_direct": acc[0], "accuracy_refined": acc[-1], "accuracy_per_round": acc,
        "refinement_gain": round(acc[-1] - acc[0], 4), "fixed": len(last - first), "broken": len(first - last),
        "critic_recall_wrong": 0.75, "critic_false_alarm_rate": 0.25, "prompts": PROMPTS, "unparsed_feedback": 0,
        "calls": {"completion_tokens": 1000, "cost_usd": 0.0, "prompt_tokens": 2000, "requests": 36},
    }


def _curve(folder: Path, points: list[tuple[int, float]]) -> None:
    tsv = folder / "plots" / "metrics" / "loss.tsv"
    tsv.parent.mkdir(parents=True, exist_ok=True)
    tsv.write_text("step\tloss\n" + "".join(f"{s}\t{v}\n" for s, v in points))
    _write_json(folder / "metrics.json", {"loss": points[-1][1], "step": points[-1][0]})


def make_project(root: Path) -> Path:
    """Write the fixture project under `root` and return it."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "data/prepare").mkdir(parents=True, exist_ok=True)
    eval_prompts().write_parquet(root / "data/prepare/eval.parquet")
    for ck in CHECKPOINTS:
        _write_json(root / f"metrics/evaluate/{ck}.json", evaluation_metrics(ck))
        (root / f"data/{ck}/evaluate").mkdir(parents=True, exist_ok=True)
        evaluation_rows(ck).write_parquet(root / f"data/{ck}/evaluate/rows.parquet")
    _write_json(root / "metrics/base.json", {"checks_final_loss": 0.07, "parameters": 201728,
                                             "solutions_final_loss": 0.09})
    _write_json(root / "metrics/meta_corpus.json", {
        "rows": 40, "calls": {"completion_tokens": 500, "cost_usd": 0.01, "prompt_tokens": 700, "requests": 40}})
    _write_json(root / "metrics/train_meta.json", {"method": "sft", "sft_final_loss": 0.05, "sft_records": 80,
                                                   "sft_steps": 30})
    _write_json(root / "metrics/it1/generate.json", {
        "candidates": 30, "calls": {"completion_tokens": 300, "cost_usd": 0.0, "prompt_tokens": 100, "requests": 30}})
    _write_json(root / "metrics/it1/critique.json", {
        "rows": 30, "calls": {"completion_tokens": 200, "cost_usd": 0.0, "prompt_tokens": 400, "requests": 30},
        "critic_calls": {"completion_tokens": 50, "cost_usd": 0.02, "prompt_tokens": 50, "requests": 5}})
    _write_json(root / "metrics/it1/filter.json", {"kept": 17, "rows": 30, "dropped": 13})
    _write_json(root / "metrics/it1/build_sft.json", {"records": 25})
    _write_json(root / "metrics/it1/build_pairs.json", {"pairs": 6, "prompts": 10})
    _write_json(root / "metrics/it1/train.json", {"method": "sft+dpo", "sft_final_loss": 0.02, "sft_steps": 4,
                                                  "dpo_final_loss": 0.6, "dpo_steps": 2})
    _curve(root / "dvclive/base", [(1, 4.3), (51, 1.4), (101, 0.8), (151, 0.5), (200, 0.3)])
    _curve(root / "dvclive/train_meta", [(10, 0.4), (20, 0.2), (30, 0.05)])
    _curve(root / "dvclive/it1/train", [(1, 0.08), (2, 0.05), (3, 0.03), (4, 0.02), (5, 0.69), (6, 0.6)])
    return root
