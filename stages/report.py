"""report: accuracy per checkpoint (direct and self-refined) for `dvc plots`, and a
short summary of where the run's results are."""

import json
from pathlib import Path

from stages._outputs import write_csv, write_metrics
from stages._params import load_params, main


def run(argv: list[str]) -> None:
    params = load_params("report")
    rows, rounds = [], []
    for order, name in enumerate(params["checkpoints"]):
        m = json.loads(Path(f"metrics/evaluate/{name}.json").read_text())
        rows.append({"order": order, "checkpoint": name, "direct": m["accuracy_direct"],
                     "refined": m["accuracy_refined"], "gain": m["refinement_gain"]})
        rounds += [{"checkpoint": name, "round": r, "accuracy": a} for r, a in enumerate(m["accuracy_per_round"])]
    write_csv("plots/accuracy.csv", rows)
    write_csv("plots/rounds.csv", rounds)
    first, last = rows[0], rows[-1]
    summary = {
        "checkpoints": [r["checkpoint"] for r in rows],
        "accuracy_direct": {r["checkpoint"]: r["direct"] for r in rows},
        "accuracy_refined": {r["checkpoint"]: r["refined"] for r in rows},
        "final_gain_over_base": round(last["direct"] - first["direct"], 4),
        "final_refinement_gain": last["gain"],
    }
    write_metrics("metrics/report.json", summary)
    width = max(len(r["checkpoint"]) for r in rows)
    print("held-out accuracy (direct -> with self-refinement):")
    for r in rows:
        print(f"  {r['checkpoint']:<{width}}  {r['direct']:.3f} -> {r['refined']:.3f}")
    print("metrics: dvc metrics show | plots: dvc plots show (plots/accuracy.csv, plots/rounds.csv)")


if __name__ == "__main__":
    main(run)
