"""`honing compare`: per-prompt wins, losses and ties of two checkpoints, direct and
refined, from their evaluation rows (fixture: tests/report_fixture.py)."""

from __future__ import annotations

import json

import pytest
from report_fixture import RIGHT, ROUNDS, make_project

from honing.cli import main
from honing.compare import compare


@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path / "project")


def expected(a: str, b: str, rnd: int) -> dict:
    ra, rb, every = RIGHT[a][rnd], RIGHT[b][rnd], set(range(12))
    return {"wins": len(ra - rb), "losses": len(rb - ra), "ties_both_right": len(ra & rb),
            "ties_both_wrong": len(every - ra - rb)}


def test_counts_follow_the_rows(project):
    result = compare("train_meta", "it1", project, examples=5)
    for label, rnd in (("direct", 0), ("refined", ROUNDS)):
        got = {k: result[label][k] for k in ("wins", "losses", "ties_both_right", "ties_both_wrong")}
        assert got == expected("train_meta", "it1", rnd), label
        assert result[label]["prompts"] == 12
    # refined: it1 broke p00 that train_meta keeps right, and fixed p10
    assert [e["prompt_id"] for e in result["refined"]["examples"]["wins"]] == ["p00"]
    assert [e["prompt_id"] for e in result["refined"]["examples"]["losses"]] == ["p10"]
    assert result["rounds"] == {"a": ROUNDS, "b": ROUNDS}


def test_a_checkpoint_against_itself_is_all_ties(project):
    result = compare("it1", "it1", project)
    assert result["direct"]["wins"] == result["direct"]["losses"] == 0


def test_rows_given_by_path(project):
    by_path = compare("data/base/evaluate/rows.parquet", "it1", project)
    assert by_path["direct"]["losses"] == expected("base", "it1", 0)["losses"]


def test_the_command_prints_counts_and_examples(project, capsys):
    assert main(["compare", "base", "it1", "--root", str(project)]) == 0
    out = capsys.readouterr().out
    e = expected("base", "it1", 0)
    direct = next(line for line in out.splitlines() if line.startswith("direct"))
    assert direct.split()[1:] == [str(e["wins"]), str(e["losses"]), str(e["ties_both_right"]),
                                  str(e["ties_both_wrong"])]
    assert "[direct] only it1 right: p03" in out
    assert "prompt: Ann has 13 coins" in out  # joined from data/prepare/eval.parquet
    assert main(["compare", "base", "it1", "--root", str(project), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["refined"]["prompts"] == 12


def test_a_missing_checkpoint_is_a_one_line_error(project, capsys):
    assert main(["compare", "base", "it7", "--root", str(project)]) == 1
    err = capsys.readouterr().err
    assert "it7: " in err and "evaluate@it7" in err and err.count("\n") == 1
