"""`honing inspect <artifact>`: what an artifact holds, at a glance.

An artifact is named as the pipeline names it (`pairs@it1`, `sft@train_meta`,
`evaluate@it2`, `prompts@eval`, `meta_corpus`) or given by path. The report: its
file and schema, whether it passes the schema, rows and columns (type, nulls,
distinct values, the schema's description), the counts of each value of the
columns that hold a few (verdict, kind, reason), and a few rows side by side,
one column of text per row, chat messages as `role: content`.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from honing.errors import HoningError

# name before "@" -> (schema name in schemas.registry, paths; "{at}" is the iteration
# or checkpoint, the first path that exists wins). The names are publishing's
# (honing.publish), so `honing inspect sft@it1` and `honing publish sft@it1` agree.
KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "prompts": ("prompts", ("data/prepare/{at}.parquet",)),
    "quarantine": ("quarantine", ("data/{at}/quarantine.parquet",)),
    "meta_corpus": ("meta_corpus", ("data/meta_corpus/corpus.parquet",)),
    "candidates": ("candidates", ("data/{at}/generate/candidates.parquet",)),
    "feedback": ("feedback", ("data/{at}/critique/feedback.parquet",)),
    "refinements": ("refinements", ("data/{at}/refine/refinements.parquet",)),
    "filtered": ("filtered", ("data/{at}/filter/filtered.parquet",)),
    "sft": ("sft", ("data/{at}/build_sft/sft.parquet", "data/{at}/sft.parquet")),
    "pairs": ("pairs", ("data/{at}/build_pairs/pairs.parquet",)),
    "evaluate": ("evaluation", ("data/{at}/evaluate/rows.parquet",)),
}
ALIASES = {"evaluation": "evaluate", "corpus": "meta_corpus"}
FEW_VALUES = 12  # a string column with at most this many distinct values gets value counts


@dataclass(frozen=True)
class Located:
    name: str  # "pairs@it1", or the path when the file is not a pipeline artifact
    path: Path
    schema: str | None  # its name in schemas.registry


def locate(spec: str, root: str | Path = ".") -> Located:
    """An artifact from its name (`pairs@it1`) or its path."""
    root = Path(root)
    head, _, at = spec.partition("@")
    kind = ALIASES.get(head, head)
    if kind in KINDS and "/" not in spec:
        schema, patterns = KINDS[kind]
        takes_at = "{at}" in patterns[0]
        if takes_at != bool(at):
            raise HoningError(f"{spec}: expected {kind}@<name>" if takes_at else f"{spec}: expected {kind}")
        paths = [root / p.format(at=at) for p in patterns]
        path = next((p for p in paths if p.is_file()), paths[0])
        if not path.is_file():
            raise HoningError(f"{spec}: {path} does not exist (has its stage run? `dvc repro` or `dvc pull`)")
        return Located(f"{kind}@{at}" if at else kind, path, schema)
    path = Path(spec) if Path(spec).is_absolute() else root / spec
    if not path.is_file():
        names = ", ".join(f"{k}@<name>" if "{at}" in v[1][0] else k for k, v in KINDS.items())
        raise HoningError(f"{spec}: neither a file nor an artifact name (names: {names})")
    rel = path.resolve().relative_to(root.resolve()).as_posix() if path.resolve().is_relative_to(
        root.resolve()) else path.as_posix()
    for kind, (schema, patterns) in KINDS.items():
        for pattern in patterns:
            m = re.fullmatch(re.escape(pattern).replace(re.escape("{at}"), "(?P<at>[^/]+)"), rel)
            if m:
                at = m.groupdict().get("at")
                return Located(f"{kind}@{at}" if at else kind, path, schema)
    return Located(rel, path, None)


def _text(value: Any) -> str:
    """A cell as text: chat messages as `role: content` lines."""
    if value is None:
        return "null"
    if isinstance(value, list) and value and all(isinstance(m, dict) and {"role", "content"} <= set(m)
                                                 for m in value):
        return "\n".join(f"{m['role']}: {m['content']}" for m in value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def side_by_side(frame: pl.DataFrame, width: int = 100, cell_lines: int = 8) -> str:
    """The rows of `frame` as columns next to each other, one line block per field."""
    if frame.height == 0:
        return "(no rows)"
    label = max(len(c) for c in frame.columns) + 2
    col = max(16, (width - label) // frame.height - 2)
    out = []
    for name in frame.columns:
        cells = []
        for value in frame[name].to_list():
            lines = [piece for line in _text(value).splitlines() or [""]
                     for piece in (textwrap.wrap(line, col) or [""])]
            if len(lines) > cell_lines:
                lines = lines[: cell_lines - 1] + [f"... {len(lines) - cell_lines + 1} more lines"]
            cells.append(lines)
        height = max(len(c) for c in cells)
        for i in range(height):
            head = name if i == 0 else ""
            out.append(f"{head:<{label}}" + "  ".join(f"{(c[i] if i < len(c) else ''):<{col}}"
                                                       for c in cells).rstrip())
        if height > 1:  # a blank line after a field of several lines
            out.append("")
    return "\n".join(out).rstrip()


def describe(frame: pl.DataFrame, schema=None) -> list[dict[str, Any]]:
    """Per column: name, dtype, nulls, distinct values, the schema's description."""
    fields = schema.to_schema().columns if schema is not None else {}
    rows = []
    for name in frame.columns:
        series = frame[name]
        try:
            distinct = series.n_unique()
        except Exception:  # nested types without hashing
            distinct = None
        rows.append({"column": name, "dtype": str(series.dtype), "nulls": series.null_count(),
                     "distinct": distinct,
                     "description": getattr(fields.get(name), "description", None) or ""})
    return rows


def value_counts(frame: pl.DataFrame) -> dict[str, list[tuple[Any, int]]]:
    """Counts of each value of the text and boolean columns that hold a few values."""
    out = {}
    for name in frame.columns:
        series = frame[name]
        if series.dtype not in (pl.String, pl.Boolean) or name == "id" or name.endswith("_id"):
            continue
        if series.n_unique() <= FEW_VALUES and series.n_unique() < max(frame.height, 2):
            counts = series.value_counts(sort=True)
            out[name] = sorted(((v, int(n)) for v, n in counts.iter_rows()), key=lambda vn: (-vn[1], str(vn[0])))
    return out


def inspect(spec: str, root: str | Path = ".", rows: int = 3, width: int = 100,
            schemas: Mapping[str, Any] | None = None) -> str:
    """The text `honing inspect` prints. `schemas`: schema name -> schema (the project's
    `schemas.registry.ARTIFACTS`; the library imports no schema)."""
    from honing.artifacts.validation import check, message

    found = locate(spec, root)
    frame = pl.read_parquet(found.path)
    schema = (schemas or {}).get(found.schema) if found.schema is not None else None
    lines = [f"{found.name}: {found.path}", f"{frame.height:,} rows, {frame.width} columns"]
    if schema is not None:
        _, failures = check(frame, schema, id_column="id" if "id" in frame.columns else None)
        lines.append(f"schema {schema.__name__}: " + ("valid" if not failures else
                                                       message(found.path, failures, schema)))
    lines.append("")
    table = describe(frame, schema)
    widths = {k: max(len(k), *(len(str(r[k])) for r in table)) for k in ("column", "dtype", "nulls", "distinct")}
    lines.append("  ".join(f"{k:<{widths[k]}}" for k in widths) + "  description")
    for r in table:
        lines.append("  ".join(f"{str(r[k] if r[k] is not None else '-'):<{widths[k]}}" for k in widths)
                     + "  " + r["description"])
    counts = value_counts(frame)
    if counts:
        lines.append("")
        for name, pairs in counts.items():
            lines.append(f"{name}: " + ", ".join(f"{v} {n:,}" for v, n in pairs))
    if rows > 0:
        lines += ["", f"first {min(rows, frame.height)} rows side by side:", "",
                  side_by_side(frame.head(rows), width)]
    return "\n".join(lines)
