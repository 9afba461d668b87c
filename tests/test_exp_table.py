"""`honing exp-table`: markdown tables of experiments from `dvc exp show --json`.

On a saved output (tests/fixtures/exp_show.json: a baseline `main`, two experiments
run with `--temp`, two queued ones of which one failed) and on the real output of a
tiny git + DVC repository with one trivial stage and two experiments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from honing.cli import main
from honing.errors import HoningError
from honing.exp_table import experiments, table, update_block

FIXTURE = Path(__file__).with_name("fixtures") / "exp_show.json"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def shown() -> list:
    return json.loads(FIXTURE.read_text())


def test_experiments_are_the_baseline_and_every_experiment(shown):
    found = {(e.name, e.baseline, e.state) for e in experiments(shown)}
    assert found == {("main", True, "success"), ("method-dpo", False, "success"),
                     ("method-sft-dpo", False, "success"), ("min-score-3", False, "success"),
                     ("min-score-12", False, "failed")}


def test_a_table_of_chosen_columns(shown):
    text = table(shown, params=["train.method"], metrics=["it2.accuracy_direct", "it2.kept", "tokens"],
                 patterns=["method-*"], baseline=True)
    assert text.splitlines() == [
        "| experiment | train.method | it2.accuracy_direct | it2.kept | tokens |",
        "|---|---|---|---|---|",
        "| main (baseline) | sft | 0.9400 | 990 | 123,456 |",
        "| method-dpo | dpo | 0.9500 | 990 | 123,456 |",
        "| method-sft-dpo | sft+dpo | 0.9600 | 990 | 123,456 |",
    ]


def test_a_failed_experiment_shows_its_params_and_no_metrics(shown):
    text = table(shown, params=["filter.min_score"], metrics=["it2.kept"], patterns=["min-score-*"],
                 sort="filter.min_score")
    assert text.splitlines()[2:] == ["| min-score-3 | 3 | 720 |", "| min-score-12 (failed) | 12 | – |"]


def test_a_key_in_several_files_needs_its_file(shown):
    with pytest.raises(HoningError, match="is in dvclive/it1/train/metrics.json, dvclive/it2/train/metrics.json"):
        table(shown, metrics=["loss"])
    text = table(shown, metrics=["dvclive/it2/train/metrics.json:loss"], patterns=["method-dpo"])
    assert text.splitlines() == ["| experiment | loss |", "|---|---|", "| method-dpo | 0.0200 |"]


def test_bad_columns_and_patterns_are_errors(shown):
    with pytest.raises(HoningError, match="no chosen experiment has it"):
        table(shown, metrics=["it3.accuracy_direct"])
    with pytest.raises(HoningError, match="no experiment matches rounds-"):
        table(shown, metrics=["tokens"], patterns=["rounds-*"])
    with pytest.raises(HoningError, match="no columns"):
        table(shown)


README = """# project

<!-- recipe-method: written by `honing exp-table` -->
<!-- /recipe-method -->

<!-- results: written by `honing results --update README.md` from metrics/report.json -->
| untouched |
<!-- /results -->
"""


def test_the_table_goes_into_its_block_and_nowhere_else(shown, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    args = ["exp-table", "--json", str(FIXTURE), "--params", "train.method", "--metrics", "it2.accuracy_direct",
            "--exp", "method-*", "--update", str(readme), "--block", "recipe-method"]
    assert main(args) == 0
    once = readme.read_text()
    assert "| method-dpo | dpo | 0.9500 |" in once
    # the opening marker says how to write the table again, and from what (here a saved exp show)
    assert (f"<!-- recipe-method: written by `honing exp-table --params train.method --metrics it2.accuracy_direct "
            f"--exp 'method-*' --json {FIXTURE} --update {readme} --block recipe-method` from `{FIXTURE}` "
            "(saved `dvc exp show --json` output) -->") in once
    assert "| untouched |" in once and once.endswith("<!-- /results -->\n")
    assert main(args) == 0
    assert readme.read_text() == once  # rewriting an unchanged table changes nothing
    with pytest.raises(HoningError, match="no 'recipe-rounds' block"):
        update_block(README, "recipe-rounds", "| t |", "honing exp-table")
    assert main([*args[:-1], "recipe-rounds"]) == 1
    assert "no 'recipe-rounds' block" in capsys.readouterr().err


def run(repo: Path, *command: str) -> str:
    result = subprocess.run(list(command), cwd=repo, capture_output=True, text=True, check=False,
                            env={"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(repo.parent), "DVC_NO_ANALYTICS": "1",
                                 "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t.invalid",
                                 "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t.invalid"})
    assert result.returncode == 0, f"{command}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result.stdout


def test_a_real_dvc_exp_show(tmp_path, monkeypatch, capsys):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text("refine: {rounds: 1}\n")
    (repo / "stage.py").write_text(
        "import json, os, yaml\n"
        "rounds = yaml.safe_load(open('params.yaml'))['refine']['rounds']\n"
        "os.makedirs('metrics', exist_ok=True)\n"
        "json.dump({'it2': {'accuracy_refined': 0.9 + rounds / 100}, 'tokens': 1000 * rounds},"
        " open('metrics/summary.json', 'w'))\n")
    (repo / "dvc.yaml").write_text(
        "stages:\n  report:\n    cmd: python stage.py\n    deps: [stage.py]\n    params: [refine]\n"
        "    metrics:\n      - metrics/summary.json: {cache: false}\n")
    run(repo, "git", "init", "-q")
    run(repo, "dvc", "init", "-q")
    run(repo, "dvc", "repro", "-q")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-q", "-m", "baseline")
    for rounds in (2, 3):
        run(repo, "dvc", "exp", "run", "-q", "-n", f"rounds-{rounds}", "-S", f"refine.rounds={rounds}")
    monkeypatch.chdir(repo)
    assert main(["exp-table", "--params", "refine.rounds", "--metrics", "it2.accuracy_refined,tokens",
                 "--exp", "rounds-*", "--baseline"]) == 0
    assert capsys.readouterr().out.splitlines()[2:] == [
        "| master (baseline) | 1 | 0.9100 | 1,000 |" if "master" in run(repo, "git", "branch") else
        "| main (baseline) | 1 | 0.9100 | 1,000 |",
        "| rounds-2 | 2 | 0.9200 | 2,000 |",
        "| rounds-3 | 3 | 0.9300 | 3,000 |",
    ]


def test_a_mean_row_averages_each_metrics_column(shown):
    text = table(shown, params=["train.method"], metrics=["it2.accuracy_direct", "it2.kept"],
                 patterns=["method-*"], baseline=True, mean=True)
    # (0.94 + 0.95 + 0.96) / 3 and 990; params columns get no mean
    assert text.splitlines()[-1] == "| mean of 3 |  | 0.9500 | 990.0000 |"
    failed = table(shown, metrics=["it2.kept"], patterns=["min-score-*"], mean=True)
    assert failed.splitlines()[-1] == "| mean of 2 |  |", "a column with a missing value has no mean"


def test_readme_tables_from_saved_experiments_are_what_their_command_writes(monkeypatch, capsys):
    """A README block written from a saved `dvc exp show --json` (the seeds tables)
    must be what its marker's command prints from that file today."""
    import re
    import shlex

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    pattern = r"<!-- ([\w-]+): written by `(honing exp-table [^`]*--json [^`]*)` from [^\n]*-->\n(.*?)\n<!-- /\1 -->"
    blocks = re.findall(pattern, (root / "README.md").read_text(), re.S)
    assert {name for name, _, _ in blocks} >= {"seeds", "seeds-critic"}
    for name, command, body in blocks:
        args = shlex.split(command)[1:]
        cut = args.index("--update")
        assert main(args[:cut] + args[cut + 4:]) == 0  # without --update README.md --block NAME
        assert capsys.readouterr().out.strip() == body.strip(), f"README block {name!r} differs from {command!r}"
