"""`honing inspect`: an artifact by name or path, its schema check, counts, and rows
side by side (on fixture artifacts written through their schemas)."""

from __future__ import annotations

import polars as pl
import pytest
from report_fixture import make_project

from honing.artifacts.io import write_artifact
from honing.cli import main
from honing.errors import HoningError
from honing.inspect import inspect, locate, side_by_side
from schemas.pairs import PreferencePairs
from schemas.registry import ARTIFACTS


def msgs(role, text):
    return [{"role": role, "content": text}]


@pytest.fixture
def project(tmp_path):
    root = make_project(tmp_path / "project")
    pairs = pl.DataFrame({
        "id": ["a1", "a2", "a3", "a4"], "prompt_id": ["p1", "p2", "p3", "p4"],
        "prompt": [msgs("user", f"Ann has {i} coins . How many ?") for i in range(4)],
        "chosen": [msgs("assistant", f"Answer : {i}") for i in range(4)],
        "rejected": [msgs("assistant", f"Answer : {i + 1}") for i in range(4)],
        "chosen_score": [1.0] * 4, "rejected_score": [0.0] * 4, "margin": [1.0] * 4, "iteration": ["it1"] * 4,
    })
    write_artifact(pairs, root / "data/it1/build_pairs/pairs.parquet", PreferencePairs)
    return root


def test_names_and_paths_resolve_to_the_same_artifact(project):
    by_name = locate("pairs@it1", project)
    by_path = locate("data/it1/build_pairs/pairs.parquet", project)
    assert by_name.path == project / "data/it1/build_pairs/pairs.parquet"
    assert (by_name.name, by_name.schema) == (by_path.name, by_path.schema) == ("pairs@it1", "pairs")
    assert locate("evaluation@it1", project).name == "evaluate@it1"  # an alias
    assert locate("prompts@eval", project).schema == "prompts"


def test_inspect_shows_counts_schema_and_rows_side_by_side(project):
    text = inspect("pairs@it1", project, rows=2, width=100, schemas=ARTIFACTS)
    lines = text.splitlines()
    assert lines[0] == f"pairs@it1: {project / 'data/it1/build_pairs/pairs.parquet'}"
    assert lines[1] == "4 rows, 9 columns"
    assert lines[2] == "schema PreferencePairs: valid"
    assert any(line.startswith("margin ") and "how much better chosen is" in line for line in lines)
    assert "iteration: it1 4" in text
    # two rows, next to each other; chat messages as role: content
    rows = lines[lines.index("first 2 rows side by side:"):]
    chosen = next(line for line in rows if line.startswith("chosen "))
    assert "assistant: Answer : 0" in chosen and "assistant: Answer : 1" in chosen
    assert chosen.index("Answer : 0") < chosen.index("Answer : 1")


def test_an_artifact_failing_its_schema_says_where(project):
    path = project / "data/it1/build_pairs/pairs.parquet"
    pl.read_parquet(path).with_columns(margin=pl.lit(-1.0)).write_parquet(path)
    text = inspect("pairs@it1", project, rows=0, schemas=ARTIFACTS)
    assert "schema PreferencePairs: " in text
    assert "4 problems against schema PreferencePairs" in text
    assert "row id 'a1' column 'margin'" in text


def test_side_by_side_wraps_and_cuts_long_cells():
    frame = pl.DataFrame({"response": ["word " * 200, "short"]})
    text = side_by_side(frame, width=60, cell_lines=4)
    lines = text.splitlines()
    assert len(lines) == 4 and "more lines" in lines[3]
    assert all(len(line) <= 60 for line in lines)
    assert "short" in lines[0]


def test_unknown_names_and_missing_files_are_one_line_errors(project, capsys):
    with pytest.raises(HoningError, match="expected pairs@<name>"):
        locate("pairs", project)
    with pytest.raises(HoningError, match="has its stage run"):
        locate("pairs@it9", project)
    assert main(["inspect", "nothing@all", "--root", str(project)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("honing inspect: nothing@all: neither a file nor an artifact name") and err.count("\n") == 1


def test_the_command_prints_the_report(project, capsys):
    assert main(["inspect", "evaluate@it1", "--root", str(project), "--rows", "1"]) == 0
    out = capsys.readouterr().out
    assert "36 rows, 9 columns" in out and "schema EvaluationRows: valid" in out
    assert "verdict: correct 31, incorrect 5" in out
