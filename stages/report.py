"""report: accuracy per checkpoint (direct and after each refinement round) for
`dvc plots`, the summary in metrics/report.json, and the results table printed."""

import json
from pathlib import Path

from honing.results import results_table
from stages._outputs import write_csv, write_metrics
from stages._params import load_params, main

PER_CHECKPOINT = ("accuracy_direct", "accuracy_refined", "accuracy_per_round", "fixed", "broken",
                  "critic_recall_wrong", "critic_false_alarm_rate")


def run(argv: list[str]) -> None:
    checkpoints = list(load_params("report")["checkpoints"])
    evaluations = {ck: json.loads(Path(f"metrics/evaluate/{ck}.json").read_text()) for ck in checkpoints}
    write_csv("plots/accuracy.csv", [
        {"order": order, "checkpoint": ck, "direct": m["accuracy_direct"], "refined": m["accuracy_refined"],
         "gain": m["refinement_gain"]} for order, (ck, m) in enumerate(evaluations.items())])
    write_csv("plots/rounds.csv", [{"checkpoint": ck, "round": r, "accuracy": a}
                                   for ck, m in evaluations.items() for r, a in enumerate(m["accuracy_per_round"])])
    first, last = evaluations[checkpoints[0]], evaluations[checkpoints[-1]]
    summary = {
        "checkpoints": checkpoints,
        **{key: {ck: m[key] for ck, m in evaluations.items()} for key in PER_CHECKPOINT},
        "final_gain_over_base": round(last["accuracy_direct"] - first["accuracy_direct"], 4),
        "final_refinement_gain": last["refinement_gain"],
    }
    write_metrics("metrics/report.json", summary)
    print("held-out accuracy, direct and after each round of self-refinement (metrics/report.json):")
    print(results_table(summary))
    print("metrics: dvc metrics show | plots: dvc plots show (plots/accuracy.csv, plots/rounds.csv)")


if __name__ == "__main__":
    main(run)
