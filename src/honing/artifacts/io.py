"""Reading and writing artifacts: parquet files checked against their schema.

Writes are validated first and atomic (a temp file in the same directory, then
`os.replace`), so a stage that fails leaves no half-written artifact for DVC to
mistake for an output. They are deterministic too: the same frame gives the same
bytes (fixed compression and row groups, rows in the order given), so an
unchanged stage output keeps its DVC hash.

Artifacts too large for memory stream (`read_batches`, `write_batches`): batches
of a few row groups are validated as they pass, ids are checked for repeats over
the whole file in bounded memory, and a streamed write gives the same bytes as
`write_artifact` of the whole frame. `grouped` and `lookup` cut a stream sorted by
a key into frames of whole groups and pair them with the rows of a second sorted
artifact (the prompts of a batch of answers); a stream out of order raises
`Unsorted`, and `in_memory_if_unsorted` reruns such a pass on whole frames.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import polars as pl
from polars.io.plugins import register_io_source

from honing.artifacts.ahead import read_ahead
from honing.artifacts.validation import ArtifactError, Failure, _model, _short, message, validate

# Fixed writer settings: polars' defaults may change between versions, and a
# changed byte stream means a changed DVC hash.
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 3
ROW_GROUP_SIZE = 65_536
BATCH_ROWS = 2 * ROW_GROUP_SIZE  # rows a streamed read validates (and holds) at a time
POOL_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
T = TypeVar("T")


def _columns(schema) -> list[str]:
    model = schema.to_schema() if hasattr(schema, "to_schema") else schema
    return list(model.columns)


def read_artifact(path: str | Path, schema, id_column: str | None = "id") -> pl.DataFrame:
    """Read a parquet artifact and validate it; ArtifactError if it is missing,
    not parquet, or does not match `schema` (naming file, row id and column)."""
    path = Path(path)
    _exists(path, schema)
    try:
        df = pl.read_parquet(path)
    except Exception as e:  # polars raises several kinds for a file that is not parquet
        raise ArtifactError(f"{path}: not a readable parquet file ({_first_line(e)})") from e
    return validate(df, schema, path=path, id_column=id_column)


def _exists(path: Path, schema) -> None:
    if not path.is_file():
        name = getattr(schema, "__name__", "the schema")
        raise ArtifactError(f"{path}: no such file (expected a parquet artifact of {name}; "
                            "has the stage that writes it run?)")


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


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


# ---------------------------------------------------------------- streaming


def read_batches(path: str | Path, schema, *, columns: Sequence[str] | None = None, where: pl.Expr | None = None,
                 id_column: str | None = "id", in_memory: bool = False) -> Iterator[pl.DataFrame]:
    """An artifact in validated batches of about BATCH_ROWS rows (at least one frame,
    maybe empty): `columns` of it (default all), the rows `where` holds (default all).

    The file's schema (every column, name and dtype) is checked first; each batch's
    data is checked against the schema's rules for the columns read, and a column
    that must be unique (ids) is checked over the whole file, in bounded memory,
    when the last batch has been read. `in_memory`: one batch, the whole file read
    and validated as `read_artifact` does (every column)."""
    path = Path(path)
    if in_memory:
        frame = read_artifact(path, schema, id_column)
        frame = frame if where is None else frame.filter(where)
        yield frame if columns is None else frame.select(columns)
        return
    _exists(path, schema)
    try:
        file_schema = pl.read_parquet_schema(path)
    except Exception as e:
        raise ArtifactError(f"{path}: not a readable parquet file ({_first_line(e)})") from e
    validate(pl.DataFrame(schema=file_schema), schema, path=path, id_column=None)  # columns and dtypes
    model = _model(schema)
    columns = list(model.columns) if columns is None else list(columns)
    rules, unique = _batch_rules(model, columns)
    with _Distinct(unique) as distinct:
        def checked() -> Iterator[pl.DataFrame]:
            for batch in _slices(path, columns, where):
                batch = _validate_batch(batch, rules, path, id_column)
                distinct.add(batch)
                yield batch

        empty = True
        for batch in read_ahead(checked()):
            empty = False
            yield batch
        if empty:  # callers learn the columns from the first frame
            yield _validate_batch(pl.DataFrame(schema={c: file_schema[c] for c in columns}), rules, path, None)
        distinct.check(path, schema, lambda: _slices(path, columns, where), id_column)


def _slices(path: Path, columns: list[str], where: pl.Expr | None) -> Iterator[pl.DataFrame]:
    """The file's rows BATCH_ROWS at a time (`where` applied within each slice; slices
    it leaves empty are skipped). A slice is read when the caller asks for it: polars'
    `collect_batches` runs ahead of a slow consumer, and the batches it holds grew
    peak memory with the file (measured: 0.5 M -> 2 M rows, 406 -> 646 MB)."""
    total = pl.scan_parquet(path).select(pl.len()).collect().item()
    for offset in range(0, total, BATCH_ROWS):
        query = pl.scan_parquet(path).slice(offset, BATCH_ROWS)
        batch = (query if where is None else query.filter(where)).select(columns).collect()
        if batch.height:
            yield batch


def write_batches(batches: Iterable[pl.DataFrame], path: str | Path, schema, *,
                  id_column: str | None = "id") -> int:
    """`write_artifact` for a stream of frames (any sizes; columns as the schema's):
    re-cut into row groups, each validated and written as it comes, ids checked for
    repeats over the whole stream, atomically. The bytes are those `write_artifact`
    writes for all the frames concatenated. Returns the rows written.

    A row group at a time, not a batch of several: the parquet sink pulls a few
    frames ahead of what it has written, and frames of several row groups held
    there (about 160 MB each for preference pairs) set the stage's peak memory."""
    path = Path(path)
    model = _model(schema)
    blocks = _blocks(batches, ROW_GROUP_SIZE)
    first = next(blocks, None)
    second = None if first is None else next(blocks, None)
    if second is None:  # fits in one row group: write_artifact itself
        empty = pl.DataFrame(schema={name: column.dtype.type for name, column in model.columns.items()})
        return write_artifact(empty if first is None else first, path, schema, id_column=id_column).height
    rules, unique = _batch_rules(model, list(model.columns))
    first = _validate_batch(first, rules, path, id_column).select(list(model.columns))
    rows, frame_schema = 0, first.schema
    head = [first, second]  # handed over, not held: each block is freed once written
    del first, second
    with _Distinct(unique) as distinct, _atomic(path) as tmp:
        def row_groups(*_) -> Iterator[pl.DataFrame]:
            nonlocal rows
            for k, block in enumerate(_chain(head, blocks)):
                valid = block if k == 0 else _validate_batch(block, rules, path, id_column)
                valid = valid.select(list(model.columns)).rechunk()  # one chunk per row group, as write_artifact
                distinct.add(valid)
                rows += valid.height
                yield valid

        register_io_source(row_groups, schema=frame_schema).sink_parquet(
            tmp, compression=COMPRESSION, compression_level=COMPRESSION_LEVEL, statistics=True,
            row_group_size=ROW_GROUP_SIZE)
        distinct.check(path, schema, lambda: _slices(tmp, list(model.columns), None), id_column)
    return rows


def _chain(head: list[pl.DataFrame], rest: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    while head:
        yield head.pop(0)
    yield from rest


def _blocks(batches: Iterable[pl.DataFrame], size: int) -> Iterator[pl.DataFrame]:
    """The stream re-cut into frames of `size` rows (the last may hold fewer); a
    stream of empty frames gives one empty frame."""
    held: list[pl.DataFrame] = []
    count, yielded = 0, False
    for batch in batches:
        if batch.height == 0 and held:
            continue
        held.append(batch)
        count += batch.height
        while count >= size:
            frame = pl.concat(held, how="vertical")
            yield frame.slice(0, size)
            yielded = True
            held, count = [frame.slice(size)], count - size
    if held and (count or not yielded):
        yield pl.concat(held, how="vertical")


def _batch_rules(model, columns: list[str]):
    """(the schema's rules for these columns without `unique`, the unique columns):
    a batch is checked against the first, the whole stream for the second."""
    unique = [name for name in columns if model.columns[name].unique]
    rules = model.select_columns(columns).update_columns({name: {"unique": False} for name in unique})
    return rules, unique


def _validate_batch(batch: pl.DataFrame, rules, path: Path, id_column: str | None) -> pl.DataFrame:
    try:  # without row ids first: reading every id back is the slow part of a check that passes
        return validate(batch, rules, path=path, id_column=None)
    except ArtifactError:
        return validate(batch, rules, path=path, id_column=id_column if id_column in batch.columns else None)


class _Distinct:
    """Whether columns hold distinct values over a stream, in bounded memory: each
    value's 64-bit hash is held until SPILL hashes wait, then they are sorted and
    spilled to 64 files by their top bits; each file is sorted on its own at the end,
    and the rows behind a repeated hash are then compared for real (a second read of
    the column). Spilling in large sorted runs, not per batch, keeps the file
    writes few; a column that never reaches SPILL hashes is checked in memory,
    without files (opening their 130 files took 0.06 s a check here)."""

    BUCKETS = 64
    SPILL = 1 << 21  # hashes held before a spill (16 MiB a column)

    def __init__(self, columns: list[str]):
        self.columns = columns
        self.folder: tempfile.TemporaryDirectory | None = None
        self.waiting: list[list[np.ndarray]] = [[] for _ in columns]
        self.held = [0 for _ in columns]
        self.spills = [0 for _ in columns]  # sorted runs in each file

    def __enter__(self) -> _Distinct:
        return self

    def __exit__(self, *exc) -> None:
        if self.folder is not None:
            self.folder.cleanup()

    def _file(self, column: int, bucket: int) -> Path:
        return Path(self.folder.name) / f"{column}-{bucket}.u64"

    def add(self, frame: pl.DataFrame) -> None:
        for c, name in enumerate(self.columns):
            self.waiting[c].append(frame.get_column(name).hash(seed=0).to_numpy())
            self.held[c] += frame.height
            if self.held[c] >= self.SPILL:
                self._spill(c)

    def _spill(self, c: int) -> None:
        if not self.waiting[c]:
            return
        hashes = np.concatenate(self.waiting[c])
        self.waiting[c], self.held[c] = [], 0
        hashes.sort()  # in place (no third copy held); sorted, each bucket is one run
        if self.folder is None:
            self.folder = tempfile.TemporaryDirectory(prefix="honing-distinct-")
        self.spills[c] += 1
        starts = np.arange(self.BUCKETS, dtype=np.uint64) << np.uint64(64 - 6)
        bounds = [*np.searchsorted(hashes, starts).tolist(), len(hashes)]
        for b in range(self.BUCKETS):
            if bounds[b] < bounds[b + 1]:
                with open(self._file(c, b), "ab") as f:
                    hashes[bounds[b]:bounds[b + 1]].tofile(f)

    def check(self, path: Path, schema, reread: Callable[[], Iterable[pl.DataFrame]], id_column: str | None) -> None:
        """ArtifactError naming the rows of every repeated value, as `validate` does."""
        for c, name in enumerate(self.columns):
            if not self.spills[c]:  # every hash held: one sorted run in memory
                hashes = np.concatenate(self.waiting[c]) if self.waiting[c] else np.zeros(0, np.uint64)
                self.waiting[c] = []
                hashes.sort()
                repeated = set(hashes[1:][hashes[1:] == hashes[:-1]].tolist())
                if repeated:
                    self._report(name, repeated, path, schema, reread, id_column)
                continue
            self._spill(c)
            repeated = set()
            for b in range(self.BUCKETS):
                if self._file(c, b).exists():
                    hashes = np.fromfile(self._file(c, b), dtype=np.uint64)
                    hashes = hashes if self.spills[c] == 1 else np.sort(hashes)  # one run is sorted already
                    repeated.update(hashes[1:][hashes[1:] == hashes[:-1]].tolist())
            if repeated:
                self._report(name, repeated, path, schema, reread, id_column)

    @staticmethod
    def _report(name: str, repeated: set[int], path: Path, schema, reread, id_column: str | None) -> None:
        rows: dict[Any, list[tuple[int, Any]]] = {}
        offset = 0
        wanted = pl.Series(sorted(repeated), dtype=pl.UInt64)
        for batch in reread():
            suspects = batch.with_row_index("_row", offset).filter(pl.col(name).hash(seed=0).is_in(wanted.implode()))
            ids = pl.col(id_column or name).alias("_id")  # the id column may be the repeated one
            for row, value, row_id in suspects.select("_row", name, ids).iter_rows():
                rows.setdefault(value, []).append((row, row_id))
            offset += batch.height
        failures = []
        for value, where in rows.items():
            if len(where) < 2:
                continue  # two values that only share a hash
            listed = ", ".join(str(r) for r, _ in where[:20]) + (f" and {len(where) - 20} more" if len(where) > 20
                                                                  else "")
            for row, row_id in where:
                failures.append(Failure(name, f"duplicate {name}", "unique", f"{_short(value)} in rows {listed}",
                                        row, None if row_id is None else str(row_id), first=where[0][0]))
        if failures:
            raise ArtifactError(message(path, failures, schema), tuple(failures))


class Unsorted(Exception):
    """A streamed artifact is not in the order a streaming pass needs (the pass reruns
    on whole frames: `in_memory_if_unsorted`)."""


def in_memory_if_unsorted(run: Callable[[bool], T]) -> T:
    """`run(in_memory=False)`, streaming; `run(True)` if a stream it reads is out of
    order. Its writes are atomic, so the streaming try leaves nothing behind."""
    try:
        return run(False)
    except Unsorted:
        return run(True)


def grouped(batches: Iterable[pl.DataFrame], by: str, *, sorted_by: Sequence[str] = (),
            in_memory: bool = False) -> Iterator[pl.DataFrame]:
    """The stream re-cut so that rows sharing `by` (a group) are never split between
    two frames. The stream must be sorted by `by` and by each of `sorted_by` (orders a
    caller needs across frames), else Unsorted. `in_memory`: one frame, any order."""
    if in_memory:
        frames = list(batches)
        yield pl.concat(frames) if len(frames) != 1 else frames[0]
        return
    last: dict[str, Any] = {}
    held = None
    for batch in batches:
        if batch.height == 0:
            continue
        for name in (by, *sorted_by):
            column = batch.get_column(name)
            if not column.is_sorted() or (name in last and column[0] < last[name]):
                raise Unsorted(f"not sorted by {name}")
            last[name] = column[-1]
        frame = batch if held is None else pl.concat([held, batch])
        cut = frame.get_column(by).search_sorted(last[by], side="left")  # where the last group starts
        if cut:
            yield frame.slice(0, cut)
        held = frame.slice(cut)
    if held is not None:
        yield held


def lookup(chunks: Iterable[pl.DataFrame | tuple], on: str, table: Iterable[pl.DataFrame], key: str = "id", *,
           in_memory: bool = False) -> Iterator[tuple]:
    """Each chunk with the rows of `table` whose `key` is among the chunk's `on`
    values, as (chunk, rows); a chunk that is a tuple (an earlier lookup's) gets the
    rows appended, its first frame read. A merge of two streams sorted on the key
    (else Unsorted); the table is read to its end, so that its checks run."""
    table = iter(table)
    held = next(table)  # read_batches yields at least one frame, maybe empty: the table's columns
    if in_memory:
        held = pl.concat([held, *table])
    last, done = None, in_memory
    for item in chunks:
        chunk = item[0] if isinstance(item, tuple) else item
        head = item if isinstance(item, tuple) else (item,)
        if chunk.height == 0:
            continue
        top = chunk.get_column(on).max()
        while not done and (held.height == 0 or held.get_column(key)[-1] < top):
            batch = next(table, None)
            if batch is None:
                done = True
            elif batch.height:
                column = batch.get_column(key)
                if not column.is_sorted() or (last is not None and column[0] < last):
                    raise Unsorted(f"not sorted by {key}")
                last = column[-1]
                held = pl.concat([held, batch]) if held.height else batch
        wanted = pl.col(key).is_in(chunk.get_column(on).unique().implode())
        if in_memory:
            yield *head, held.filter(wanted)
            continue
        cut = held.get_column(key).search_sorted(top, side="right")
        part, held = held.slice(0, cut), held.slice(cut)
        yield *head, part.filter(wanted)
    for _ in table:  # the rest is not needed, but its checks are
        pass


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
    and then `problem` (a metrics key) and `error` (in words) say why. `where` names it
    for people ("line 7", "row 6")."""

    where: str
    record: dict[str, Any] | None
    raw: str  # the record as JSON text, or the raw line when it is not JSON
    error: str | None = None
    problem: str | None = None


BOM = b"\xef\xbb\xbf"
_ESCAPED = re.compile("[\udc80-\udcff]")  # an undecodable byte, as `surrogateescape` keeps it


def read_pool(path: str | Path) -> list[PoolRecord]:
    """Every record of a local prompt pool file: .jsonl (one object a line), .json (an
    array of objects), .csv (a header, then every cell as text) or .parquet (values
    as stored). A UTF-8 byte-order mark is skipped. Records that cannot be read (bad
    JSON, not an object, a JSONL line that is not UTF-8, a CSV row with the wrong
    number of fields) come back with their error, so the caller can quarantine them;
    a missing or unreadable file, or invalid UTF-8 where no single record can be
    set aside (JSON, CSV, a parquet string column), raises ArtifactError naming the
    line or row."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in POOL_SUFFIXES:
        raise ArtifactError(f"{path}: unsupported prompt pool format {suffix!r} "
                            f"(expected one of {', '.join(POOL_SUFFIXES)})")
    if not path.is_file():
        raise ArtifactError(f"{path}: no such file")
    if suffix == ".parquet":
        return _read_parquet(path)
    data = path.read_bytes()
    data = data[len(BOM):] if data.startswith(BOM) else data
    if suffix == ".jsonl":
        return list(_read_jsonl(data))
    if suffix == ".csv":
        return _read_csv(path, data)
    try:
        data = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        offset = e.start - (data.rfind(b"\n", 0, e.start) + 1)
        raise ArtifactError(f"{path}: invalid UTF-8 at line {line} (byte 0x{data[e.start]:02x} at offset "
                            f"{offset} of the line); the file must be UTF-8") from e
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, list):
        raise ArtifactError(f"{path}: expected a JSON array of objects, found {type(data).__name__}")
    return [_record(f"item {i}", item) for i, item in enumerate(data)]


def _read_jsonl(data: bytes) -> Iterator[PoolRecord]:
    for n, line in enumerate(data.splitlines(), start=1):  # \n, \r\n or \r, as text mode reads
        if not line.strip():
            continue  # blank lines are not records
        where = f"line {n}"
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:  # set the line aside: never guess the text (no U+FFFD)
            yield PoolRecord(where, None, line.decode("utf-8", "backslashreplace"),
                             f"invalid UTF-8 (byte 0x{line[e.start]:02x} at offset {e.start})", "invalid_utf8")
            continue
        try:
            item = json.loads(text)
        except json.JSONDecodeError as e:
            yield PoolRecord(where, None, text, f"invalid JSON ({e.msg})", "invalid_json")
            continue
        yield _record(where, item)


def _read_csv(path: Path, data: bytes) -> list[PoolRecord]:
    """Rows as {header: cell} with every cell as text (an empty cell is "", not null:
    "empty prompt" says more than "missing"). `where` is the line the row starts on,
    which differs from its index once a quoted cell holds a line break."""
    text = data.decode("utf-8", "surrogateescape")  # bad bytes kept, to name their line and column
    check_bytes = _ESCAPED.search(text) is not None
    reader = csv.reader(io.StringIO(text, newline=""))
    records: list[PoolRecord] = []
    header: list[str] | None = None
    start = 1
    limit = csv.field_size_limit(2**31 - 1)  # the default 128 KiB would stop a long prompt before its check
    try:
        for cells in reader:
            line, start = start, reader.line_num + 1
            if not cells:
                continue  # blank lines are not records
            if check_bytes:
                _csv_utf8(path, line, cells, header)
            if header is None:
                header = cells
                repeated = sorted({c for c in cells if cells.count(c) > 1})
                if repeated:
                    raise ArtifactError(f"{path}: line {line} (the header): column {repeated[0]!r} appears twice")
            elif len(cells) != len(header):
                records.append(PoolRecord(f"line {line}", None, json.dumps(cells, ensure_ascii=False),
                                          f"expected {len(header)} fields (as the header), found {len(cells)}",
                                          "wrong_field_count"))
            else:
                records.append(_record(f"line {line}", dict(zip(header, cells, strict=True))))
    except csv.Error as e:
        raise ArtifactError(f"{path}: not a readable csv file (line {reader.line_num}: {e})") from e
    finally:
        csv.field_size_limit(limit)
    return records


def _csv_utf8(path: Path, line: int, cells: list[str], header: list[str] | None) -> None:
    for i, cell in enumerate(cells):
        bad = _ESCAPED.search(cell)
        if bad:
            column = header[i] if header is not None and i < len(header) else f"field {i + 1}"
            where = f"line {line}" + (f", column {column!r}" if header is not None else " (the header)")
            raise ArtifactError(f"{path}: invalid UTF-8 at {where} (byte 0x{ord(bad.group()) - 0xDC00:02x}); "
                                "the file must be UTF-8")


def _read_parquet(path: Path) -> list[PoolRecord]:
    try:
        df = pl.read_parquet(path)
    except Exception as e:  # polars raises several kinds for a file it cannot read
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "utf-8" in first.lower():
            bad = _parquet_bad_utf8(path)
            if bad:
                raise ArtifactError(f"{path}: invalid UTF-8 at {bad}") from e
        raise ArtifactError(f"{path}: not a readable parquet file ({first})") from e
    # A binary column's values stay bytes: the caller quarantines them as not text.
    return [_record(f"row {i}", row) for i, row in enumerate(df.iter_rows(named=True))]


def _parquet_bad_utf8(path: Path) -> str | None:
    """Where a string column holds bytes that are not UTF-8 ("row 3, column 'prompt' ...").
    polars refuses the whole file; pyarrow reads it without checking, so look there."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    for name in table.column_names:
        column = table.column(name)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            continue
        for i, value in enumerate(column.cast(pa.large_binary()).to_pylist()):
            try:
                if value is not None:
                    value.decode("utf-8")
            except UnicodeDecodeError as e:
                return f"row {i}, column {name!r} (byte 0x{value[e.start]:02x} at offset {e.start})"
    return None


HF_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}


def read_hf_pool(spec: str) -> list[PoolRecord]:
    """Rows of a `datasets` dataset: "hf:<name>[:<split>]" or "hf:<name>:<config>:<split>".

    <name> is a Hub dataset, a local folder of data files (splits from file
    names, e.g. train-*.parquet), a folder written by `save_to_disk` (read with
    `load_from_disk`), or one local data file (loaded as `data_files`)."""
    import datasets  # slow to import: only when asked for

    parts = spec[len("hf:"):].split(":")
    if not parts[0] or len(parts) > 3:
        raise ArtifactError(f"{spec}: expected 'hf:<name>[:<split>]' or 'hf:<name>:<config>:<split>'")
    name = parts[0]
    config = parts[1] if len(parts) == 3 else None
    split = parts[-1] if len(parts) > 1 else "train"
    if name in set(HF_BUILDERS.values()) | {"text", "arrow"}:
        # load_dataset("parquet") without data_files would read whatever is in the cwd
        raise ArtifactError(f"{spec}: name a folder or a data file, e.g. 'hf:data/pool.{name}'")
    local = Path(name)
    try:
        if local.is_dir() and any((local / f).exists() for f in ("state.json", "dataset_dict.json")):
            ds = datasets.load_from_disk(str(local))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise ArtifactError(f"{spec}: no split {split!r} (have {', '.join(ds)})")
                ds = ds[split]
        elif local.is_file() and local.suffix.lower() in HF_BUILDERS:
            ds = datasets.load_dataset(HF_BUILDERS[local.suffix.lower()], data_files={split: str(local)},
                                       split=split)
        else:
            ds = datasets.load_dataset(name, config, split=split)
    except ArtifactError:
        raise
    except Exception as e:  # datasets raises many kinds; the stage should say one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ArtifactError(f"{spec}: could not load the dataset ({type(e).__name__}: {first})") from e
    return [_record(f"row {i}", rec) for i, rec in enumerate(ds.to_list())]



def pool_text(value: Any, name: str) -> tuple[str | None, tuple[str, str] | None]:
    """A value read from a pool as text: (the text, None), or (None, (problem, reason))
    when it is not text. Bytes (a binary parquet column, as old writers store
    strings) are text when they are UTF-8; numbers are not text."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as e:
            return None, ("invalid_utf8", f"{name!r} is not valid UTF-8 (byte 0x{value[e.start]:02x} "
                                          f"at offset {e.start})")
    if not isinstance(value, str):
        return None, ("not_text", f"{name!r} is not text: {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate, e.g. JSON "\ud800"
        return None, ("invalid_utf8", f"{name!r} is not valid Unicode (lone surrogate at offset {e.start})")
    return value, None


def _record(where: str, item: Any) -> PoolRecord:
    # backslashreplace: a lone surrogate (JSON "\ud800") cannot be written as UTF-8 text
    raw = json.dumps(item, ensure_ascii=False, default=str).encode("utf-8", "backslashreplace").decode("utf-8")
    if not isinstance(item, dict):
        return PoolRecord(where, None, raw, f"not a JSON object ({type(item).__name__})", "not_an_object")
    return PoolRecord(where, item, raw)
