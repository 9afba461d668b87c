"""The results table: rendered from metrics/report.json, the same in the run's output
and in the README."""

import json
from pathlib import Path

import pytest

from honing.results import BEGIN, END, results_table, update_block

ROOT = Path(__file__).resolve().parents[1]
REPORT = {
    "checkpoints": ["base", "it1"],
    "accuracy_per_round": {"base": [0.305, 0.611, 0.612], "it1": [0.957, 0.981, 0.981]},
    "fixed": {"base": 310, "it1": 30}, "broken": {"base": 4, "it1": 6},
    "critic_recall_wrong": {"base": 0.961, "it1": 0.72}, "critic_false_alarm_rate": {"base": 0.81, "it1": 0.26},
    "critic_score_auc": {"base": 0.5, "it1": 0.8765},
}


def test_the_table_has_a_row_per_checkpoint_and_a_column_per_round():
    assert results_table(REPORT).splitlines() == [
        "| checkpoint | direct | after round 1 | after round 2 | fixed / broken | critic: wrong answers flagged "
        "| critic: right answers flagged | critic: score AUC |",
        "|---|---|---|---|---|---|---|---|",
        "| base | 0.305 | 0.611 | 0.612 | 310 / 4 | 0.96 | 0.81 | 0.50 |",
        "| it1 | 0.957 | 0.981 | 0.981 | 30 / 6 | 0.72 | 0.26 | 0.88 |",
    ]


def test_update_replaces_only_the_block():
    text = f"intro\n{BEGIN}\n| old |\n{END}\noutro\n"
    assert update_block(text, "| new |") == f"intro\n{BEGIN}\n| new |\n{END}\noutro\n"
    with pytest.raises(ValueError, match="no block"):
        update_block("no markers here", "| new |")


def test_the_readme_shows_the_committed_run():
    report = ROOT / "metrics/report.json"
    if not report.exists():
        pytest.skip("no metrics/report.json in this checkout: run `make run` first")
    readme = (ROOT / "README.md").read_text()
    table = results_table(json.loads(report.read_text()))
    assert update_block(readme, table) == readme, "README's results differ from metrics/report.json: " \
                                                  "run `honing results --update README.md`"
