"""The results table: held-out accuracy per checkpoint, rendered from the report's metrics.

The report stage prints it at the end of every run and `honing results --update
README.md` writes the same table into the README between two markers, so the
README never shows figures that no run produced.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

BEGIN = "<!-- results: written by `honing results --update README.md` from metrics/report.json -->"
END = "<!-- /results -->"


def results_table(report: Mapping[str, Any]) -> str:
    """A markdown table of `metrics/report.json`: one row per checkpoint."""
    checkpoints = report["checkpoints"]
    rounds = max(len(report["accuracy_per_round"][ck]) for ck in checkpoints) - 1
    head = ["checkpoint", "direct", *(f"after round {r}" for r in range(1, rounds + 1)),
            "fixed / broken", "critic: wrong answers flagged", "critic: right answers flagged"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ck in checkpoints:
        per_round = report["accuracy_per_round"][ck]
        cells = [ck, *(f"{a:.3f}" for a in per_round),
                 f"{report['fixed'][ck]} / {report['broken'][ck]}",
                 f"{report['critic_recall_wrong'][ck]:.2f}", f"{report['critic_false_alarm_rate'][ck]:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def update_block(text: str, table: str) -> str:
    """`text` with the table between BEGIN and END replaced by `table`."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"no results block: expected a line {BEGIN!r} and, after it, a line {END!r}")
    return text[: start + len(BEGIN)] + "\n" + table + "\n" + text[end:]
