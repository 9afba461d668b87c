"""report: accuracy per checkpoint (direct and after each refinement round) for
`dvc plots`, the summary in metrics/report.json, the figures `dvc exp show` compares
in metrics/summary.json, the page report/index.html, and the results table printed."""

from honing.report.load import load_inputs
from honing.report.page import render_page, write_page
from honing.report.summary import run_summary
from honing.results import results_table
from stages._outputs import write_csv, write_metrics
from stages._params import load_params, main

PER_CHECKPOINT = ("accuracy_direct", "accuracy_refined", "accuracy_per_round", "fixed", "broken",
                  "critic_recall_wrong", "critic_false_alarm_rate", "critic_score_auc")


def run(argv: list[str]) -> None:
    checkpoints = list(load_params("report")["checkpoints"])
    inputs = load_inputs(".", checkpoints)
    evaluations = inputs.evaluations
    write_csv("plots/accuracy.csv", [
        {"order": order, "checkpoint": ck, "direct": m["accuracy_direct"], "refined": m["accuracy_refined"],
         "gain": m["refinement_gain"]} for order, (ck, m) in enumerate(evaluations.items())])
    # gain: what this round added to the previous one's accuracy
    write_csv("plots/rounds.csv", [
        {"checkpoint": ck, "round": r, "accuracy": a, "gain": round(a - acc[r - 1], 4) if r else 0.0}
        for ck, acc in ((ck, m["accuracy_per_round"]) for ck, m in evaluations.items()) for r, a in enumerate(acc)])
    first, last = evaluations[checkpoints[0]], evaluations[checkpoints[-1]]
    summary = {
        "checkpoints": checkpoints,
        **{key: {ck: m.get(key) for ck, m in evaluations.items()} for key in PER_CHECKPOINT},
        "final_gain_over_base": round(last["accuracy_direct"] - first["accuracy_direct"], 4),
        "final_refinement_gain": last["refinement_gain"],
    }
    write_metrics("metrics/report.json", summary)
    write_metrics("metrics/summary.json", run_summary(checkpoints, evaluations, inputs.stage_metrics))
    write_page(render_page(inputs), "report/index.html")
    print("held-out accuracy, direct and after each round of self-refinement (metrics/report.json):")
    print(results_table(summary))
    print("compare experiments: dvc exp show (metrics/summary.json) | the page: report/index.html")
    print("metrics: dvc metrics show | plots: dvc plots show (plots/accuracy.csv, plots/rounds.csv, dvclive/)")


if __name__ == "__main__":
    main(run)
