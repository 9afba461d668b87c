"""What a stage writes besides its artifacts: metrics JSON, runtime JSON, curves.

`metrics/<path>.json` is a DVC output and holds only what the data determines, so
equal data gives equal dvc.lock hashes. What varies from run to run with the same
data (seconds, cache hits, retries, money newly spent) goes to
`runtime/<path>.json`, which dvc.yaml lists as top-level metrics: `dvc metrics
show` reads it, dvc.lock does not. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _write_text(path: Path, text: str) -> None:
    """Temp file beside `path`, then rename: no half-written file remains."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)  # mkstemp makes files private; metrics are for everyone
    os.replace(tmp, path)


def write_json(path: str | Path, data: Mapping[str, Any]) -> None:
    _write_text(Path(path), json.dumps(data, indent=2, sort_keys=True) + "\n")


def runtime_path(metrics_path: str | Path) -> Path:
    """`metrics/it1/generate.json` -> `runtime/it1/generate.json`."""
    path = Path(metrics_path)
    under = path.relative_to("metrics") if path.parts[0] == "metrics" else Path(path.name)
    return Path("runtime") / under


def write_metrics(path: str | Path, metrics: Mapping[str, Any], runtime: Mapping[str, Any] | None = None) -> None:
    """The stage's metrics file, and its runtime figures beside it under runtime/."""
    write_json(path, metrics)
    if runtime:
        write_json(runtime_path(path), runtime)


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> None:
    """A curve for `dvc plots` (e.g. loss per step)."""
    columns = list(columns or (rows[0].keys() if rows else ["step", "loss"]))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _write_text(Path(path), buf.getvalue())
