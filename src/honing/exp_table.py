"""Experiment tables: the rows of `dvc exp show --json`, the columns a person picks,
as a markdown table, written between two markers in a README like the results
table (`honing exp-table ... --update README.md --block recipe-method`).

A column is a params key (`train.method`) or a metrics key (`it2.accuracy_direct`),
found in whichever params or metrics file holds it; `file:key` names the file
when several do (`metrics/evaluate/it2.json:accuracy_direct`). Rows are the
experiments whose names match the given patterns, and the baseline commit if
asked for; a failed experiment shows its params and no metrics, a queued or
running one is left out.
"""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from honing.errors import HoningError

PREFERRED = {"params": "params.yaml", "metrics": "metrics/summary.json"}  # where an ambiguous key is looked up
MISSING = "–"


@dataclass
class Experiment:
    name: str  # the experiment's name; a baseline's branch or short revision
    rev: str
    baseline: bool
    state: str  # "success", "failed", ...
    files: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # kind -> file -> flat data


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"it2": {"kept": 3}} -> {"it2.kept": 3}, as `dvc exp show` names columns."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _files(data: Mapping[str, Any] | None) -> dict[str, dict[str, dict[str, Any]]]:
    data = data or {}
    return {kind: {path: flatten((entry or {}).get("data") or {}) for path, entry in (data.get(kind) or {}).items()}
            for kind in ("params", "metrics")}


def experiments(shown: Sequence[Mapping[str, Any]]) -> list[Experiment]:
    """Every baseline commit and every experiment in `dvc exp show --json` output
    (the workspace is left out: it is not an experiment anyone can name)."""
    out = []
    for commit in shown:
        if commit.get("rev") == "workspace":
            continue
        out.append(Experiment(commit.get("name") or commit["rev"][:7], commit["rev"], True, "success",
                              _files(commit.get("data"))))
        for group in commit.get("experiments") or []:
            state = (group.get("executor") or {}).get("state") or "success"
            for rev in group.get("revs") or []:
                name = rev.get("name") or group.get("name") or rev["rev"][:7]
                failed = rev.get("error") is not None or state == "failed"
                out.append(Experiment(name, rev["rev"], False, "failed" if failed else state, _files(rev.get("data"))))
    return out


def lookup(exp: Experiment, kind: str, column: str) -> tuple[bool, Any]:
    """(found, value) of a column of `kind` ("params" or "metrics") in one experiment."""
    path, sep, key = column.rpartition(":")
    files = exp.files.get(kind, {})
    if sep:
        return (key in files.get(path, {})), files.get(path, {}).get(key)
    holders = [p for p, data in files.items() if column in data]
    if not holders:
        return False, None
    if len(holders) > 1 and PREFERRED[kind] not in holders:
        raise HoningError(f"{kind} column {column!r} is in {', '.join(sorted(holders))}: name one as FILE:{column}")
    holder = PREFERRED[kind] if PREFERRED[kind] in holders else holders[0]
    return True, files[holder][column]


def cell(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list):
        return "[" + ", ".join(cell(v) for v in value) + "]"
    return str(value).replace("|", "\\|")


def _sort_key(value: Any) -> tuple:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, MISSING if value is None else str(value))


def table(shown: Sequence[Mapping[str, Any]], params: Sequence[str] = (), metrics: Sequence[str] = (),
          patterns: Sequence[str] = (), baseline: bool = False, sort: str | None = None,
          mean: bool = False) -> str:
    """The markdown table: one row per chosen experiment, one column per key; `mean`
    adds a last row with each numeric metrics column's mean over the rows shown."""
    if not params and not metrics:
        raise HoningError("no columns: give --params and/or --metrics (e.g. --metrics it2.accuracy_direct)")
    rows = [e for e in experiments(shown)
            if (e.baseline and baseline) or (not e.baseline and e.state in ("success", "failed")
                                              and (not patterns or any(fnmatch.fnmatch(e.name, p) for p in patterns)))]
    if not rows:
        raise HoningError("no experiment matches " + (", ".join(patterns) if patterns else "(none in dvc exp show)"))
    columns = [("params", c) for c in params] + [("metrics", c) for c in metrics]
    # a failed experiment's metrics are its baseline's (DVC shows what was there): left out
    values = {id(e): [(False, None) if kind == "metrics" and e.state == "failed" else lookup(e, kind, c)
                      for kind, c in columns] for e in rows}
    for i, (kind, column) in enumerate(columns):
        if not any(values[id(e)][i][0] for e in rows):
            raise HoningError(f"{kind} column {column!r}: no chosen experiment has it "
                              f"(columns are named as `dvc exp show` names them, e.g. it2.accuracy_direct)")
    if sort is None:
        rows.sort(key=lambda e: (not e.baseline, e.name))
    else:
        if sort not in params and sort not in metrics:
            raise HoningError(f"--sort {sort!r}: not one of the chosen columns")
        i = [c for _, c in columns].index(sort)
        rows.sort(key=lambda e: (not e.baseline, _sort_key(values[id(e)][i][1]), e.name))
    head = ["experiment", *(c.rpartition(":")[2] for _, c in columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in rows:
        name = f"{e.name} (baseline)" if e.baseline else e.name + (" (failed)" if e.state == "failed" else "")
        lines.append("| " + " | ".join([name, *(cell(v) for _, v in values[id(e)])]) + " |")
    if mean:
        lines.append("| " + " | ".join([f"mean of {len(rows)}", *(_mean(kind, [values[id(e)][i][1] for e in rows])
                                                                   for i, (kind, _) in enumerate(columns))]) + " |")
    return "\n".join(lines)


def _mean(kind: str, column: list[Any]) -> str:
    """A metrics column's mean where every value is a number; blank otherwise."""
    numbers = [v for v in column if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if kind != "metrics" or not numbers or len(numbers) != len(column):
        return ""
    return f"{sum(numbers) / len(numbers):.4f}"


def exp_show(repo: str | Path = ".") -> list[dict[str, Any]]:
    """`dvc exp show --json` run in `repo`, parsed."""
    command = [sys.executable, "-m", "dvc", "exp", "show", "--json"]
    result = subprocess.run(command, cwd=repo, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise HoningError(f"`dvc exp show --json` in {repo} exited {result.returncode}: "
                          f"{(result.stderr.strip().splitlines() or [''])[-1]}")
    return json.loads(result.stdout)


def markers(block: str) -> tuple[str, str]:
    """The lines that open and close a table block in a README."""
    return f"<!-- {block}: written by `honing exp-table", f"<!-- /{block} -->"


def update_block(text: str, block: str, table_text: str, command: str,
                 source: str = "`dvc exp show --json`") -> str:
    """`text` with the block's table replaced; the opening marker records the command
    (`honing exp-table ...`) that wrote it and what it read."""
    begin, end = markers(block)
    start = text.find(begin)
    stop = text.find(end, start + 1) if start >= 0 else -1
    if start < 0 or stop < 0 or "\n" not in text[start:stop]:
        raise HoningError(f"no {block!r} block: expected a line starting {begin!r} and, after it, a line {end!r}")
    opening = f"<!-- {block}: written by `{command}` from {source} -->"
    return text[:start] + opening + "\n" + table_text + "\n" + text[stop:]
