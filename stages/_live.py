"""Training curves through dvclive: one `Live` folder per training stage.

`dvclive/<stage path>/` holds dvclive's files: `plots/metrics/<name>.tsv` (one
row per logged step: `step`, value), which dvc.yaml declares as the stage's
plots, and `metrics.json` (the last value of each, and `step`), declared as its
metrics, so `dvc plots show` draws the curves and `dvc exp show` lists the final
figures. The stage runs inside `dvc repro` / `dvc exp run`, which own dvc.yaml
and git: dvclive writes no dvc.yaml of its own (`dvcyaml=None`), saves no
experiment (`save_dvc_exp=False`), writes no report and logs no params (the
stage's metrics file records its config). Nothing it writes holds a timestamp,
so equal data gives equal files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def live(folder: str | Path) -> Iterator:
    """A dvclive `Live` logging to `folder`, ended (summary written) on exit."""
    os.environ.setdefault("DVCLIVE_LOGLEVEL", "ERROR")  # before dvclive is imported: no notes on stderr
    from dvclive import Live

    with Live(str(folder), dvcyaml=None, save_dvc_exp=False, report=None, monitor_system=False) as logger:
        yield logger


def no_curve(folder: str | Path, name: str = "loss") -> None:
    """The files dvc.yaml declares for a stage that trained nothing (a base model
    taken as it is): an empty summary and a curve with its header only."""
    folder = Path(folder)
    (folder / "plots" / "metrics").mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text("{}\n")
    (folder / "plots" / "metrics" / f"{name}.tsv").write_text(f"step\t{name}\n")
