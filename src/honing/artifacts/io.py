"""Reading and writing artifacts: parquet files checked against their schema.

Writes are validated first and atomic (a temp file in the same directory, then
`os.replace`), so a stage that fails leaves no half-written artifact for DVC to
mistake for an output. They are deterministic too: the same frame gives the same
bytes (fixed compression and row groups, rows in the order given), so an
unchanged stage output keeps its DVC hash.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from honing.artifacts.validation import ArtifactError, validate

# Fixed writer settings: polars' defaults may change between versions, and a
# changed byte stream means a changed DVC hash.
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 3
ROW_GROUP_SIZE = 65_536
POOL_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


def _columns(schema) -> list[str]:
    model = schema.to_schema() if hasattr(schema, "to_schema") else schema
    return list(model.columns)


def read_artifact(path: str | Path, schema, id_column: str | None = "id") -> pl.DataFrame:
    """Read a parquet artifact and validate it; ArtifactError if it is missing,
    not parquet, or does not match `schema` (naming file, row id and column)."""
    path = Path(path)
    name = getattr(schema, "__name__", "the schema")
    if not path.is_file():
        raise ArtifactError(f"{path}: no such file (expected a parquet artifact of {name}; "
                            "has the stage that writes it run?)")
    try:
        df = pl.read_parquet(path)
    except Exception as e:  # polars raises several kinds for a file that is not parquet
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ArtifactError(f"{path}: not a readable parquet file ({first})") from e
    return validate(df, schema, path=path, id_column=id_column)


def write_artifact(df: pl.DataFrame, path: str | Path, schema, *, id_column: str | None = "id") -> pl.DataFrame:
    """Validate `df` against `schema`, then write it as parquet, atomically and
    deterministically (columns in schema order, rows as given). Returns the
    validated frame. On a validation failure nothing is written and an existing
    file is left as it was."""
    path = Path(path)
    valid = validate(df, schema, path=path, id_column=id_column)
    valid = valid.select(_columns(schema)).rechunk()  # one chunk: row groups don't depend on history
    with _atomic(path) as tmp:
        valid.write_parquet(
            tmp,
            compression=COMPRESSION,
            compression_level=COMPRESSION_LEVEL,
            statistics=True,
            row_group_size=ROW_GROUP_SIZE,
        )
    return valid


@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """A temp path beside `path`; renamed onto it if the block succeeds, removed if not."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; an artifact is for everyone to read
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(records: Iterable[Mapping[str, Any]], path: str | Path) -> None:
    """Write one JSON object per line, atomically; keys in the order given."""
    path = Path(path)
    with _atomic(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False, default=str))
            f.write("\n")


@dataclass(frozen=True)
class PoolRecord:
    """One record of a prompt pool as read: `record` is None when it could not be read,
    and then `error` says why. `where` names it for people ("line 7", "row 6")."""

    where: str
    record: dict[str, Any] | None
    raw: str  # the record as JSON text, or the raw line when it is not JSON
    error: str | None = None


def read_pool(path: str | Path) -> list[PoolRecord]:
    """Every record of a local prompt pool file: .jsonl (one object a line), .json (an
    array of objects), .parquet or .csv (all columns read as text). Unreadable
    records (bad JSON, not an object) come back with their error, so the caller can
    quarantine them; a missing or unreadable file raises ArtifactError."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in POOL_SUFFIXES:
        raise ArtifactError(f"{path}: unsupported prompt pool format {suffix!r} "
                            f"(expected one of {', '.join(POOL_SUFFIXES)})")
    if not path.is_file():
        raise ArtifactError(f"{path}: no such file")
    if suffix == ".jsonl":
        return list(_read_jsonl(path))
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ArtifactError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(data, list):
            raise ArtifactError(f"{path}: expected a JSON array of objects, found {type(data).__name__}")
        return [_record(f"item {i}", item) for i, item in enumerate(data)]
    try:
        if suffix == ".parquet":
            df = pl.read_parquet(path)
            where = "row {}"
            offset = 0
        else:  # an empty CSV cell is an empty string, not null: "empty prompt" says more than "missing"
            df = pl.read_csv(path, infer_schema=False, empty_string_is_null=False)
            where = "line {}"
            offset = 2  # the header is line 1
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ArtifactError(f"{path}: not a readable {suffix[1:]} file ({first})") from e
    return [_record(where.format(i + offset), row) for i, row in enumerate(df.iter_rows(named=True))]


def _read_jsonl(path: Path) -> Iterator[PoolRecord]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue  # blank lines are not records
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                yield PoolRecord(f"line {n}", None, line.rstrip("\n"), f"invalid JSON ({e.msg})")
                continue
            yield _record(f"line {n}", item)


def _record(where: str, item: Any) -> PoolRecord:
    raw = json.dumps(item, ensure_ascii=False, default=str)
    if not isinstance(item, dict):
        return PoolRecord(where, None, raw, f"not a JSON object ({type(item).__name__})")
    return PoolRecord(where, item, raw)
