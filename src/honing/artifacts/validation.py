"""Check a frame against its artifact schema and say, for people, what is wrong where.

`validate` returns the coerced frame or raises `ArtifactError` with one line per
failure: the file, the row id, the column, what was expected and what was found,
    data/prepare/train.parquet: row id '3f2a…' column 'prompt': empty prompt
        (check not blank after stripping whitespace); found '  '
`split_valid` is for stages that can continue without the bad rows: those go to a
quarantine frame (schemas.quarantine) with their reason.

Dtype coercion is done here, column by column, before pandera sees the frame:
pandera's own coercion reports failures against the whole schema (no column
name) and crashes on a missing column, so neither would make a readable message.
Pandera then runs the value checks on the coerced frame. A frame that passes
takes a faster road first (`_passes`): every rule of the schema, built by pandera's
own check functions, is evaluated in one parallel collect; pandera itself, one
collect per check, runs only when something fails, for the report.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandera.polars as pa
import polars as pl
import pandera.backends.polars.builtin_checks  # noqa: F401  (registers the checks' polars versions)
from pandera.api.polars.types import PolarsData
from pandera.backends.polars.checks import PolarsCheckBackend
from pandera.constants import CHECK_OUTPUT_KEY
from pandera.errors import SchemaErrors

from honing.errors import HoningError

MAX_LINES = 20

QUARANTINE_COLUMNS = {
    "source_file": pl.String,
    "row_id": pl.String,
    "column": pl.String,
    "reason": pl.String,
    "row": pl.String,
}


class ArtifactError(HoningError, ValueError):
    """An artifact (or a source file) does not match its schema.

    `failures` holds the structured failures behind the message (may be empty,
    e.g. for a missing file)."""

    def __init__(self, message: str, failures: tuple[Failure, ...] = ()):
        super().__init__(message)
        self.failures = tuple(failures)


@dataclass(frozen=True)
class Failure:
    """One thing wrong. `row` is the 0-based row position (None: not about one row)."""

    column: str | None
    problem: str  # what is wrong, in words: "empty prompt", "missing column"
    check: str | None = None  # the rule that failed: "str_length >= 1"
    found: str | None = None  # what was there, as repr text
    row: int | None = None
    row_id: str | None = None
    schema_level: bool = False  # the frame's shape is wrong: no row can be trusted
    first: int | None = None  # for a duplicate: the first row holding the value

    def line(self, path: str) -> str:
        where = []
        if self.row is not None:
            where.append(f"row id {_short(self.row_id)}" if self.row_id is not None else f"row {self.row}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        return f"{path}: " + (" ".join(where) + ": " if where else "") + self.reason

    @property
    def reason(self) -> str:
        """The failure without its location: for the quarantine file."""
        text = self.problem + (f" (check {self.check})" if self.check else "")
        return text + (f"; found {self.found}" if self.found is not None else "")


def _short(value: Any, limit: int = 60) -> str:
    if isinstance(value, pl.Series):  # a list cell: show it as a list, not a printed Series
        value = value.to_list()
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 2] + "…" + text[-1]


def _model(schema) -> pa.DataFrameSchema:
    return schema.to_schema() if hasattr(schema, "to_schema") else schema


def _name(schema) -> str:
    return getattr(schema, "__name__", None) or _model(schema).name or "schema"


# ---------------------------------------------------------------- coercion


def _coerce(df: pl.DataFrame, model: pa.DataFrameSchema) -> tuple[pl.DataFrame, list[Failure]]:
    """Cast each schema column to its dtype; report what cannot be cast, by column and row."""
    failures: list[Failure] = []
    columns = model.columns
    for name, col in columns.items():
        if name not in df.columns and col.required:
            failures.append(Failure(name, f"missing column (expected {col.dtype})", schema_level=True))
    if model.strict:
        for name in df.columns:
            if name not in columns:
                failures.append(Failure(name, f"column not in the schema (expected only: "
                                              f"{', '.join(columns)})", schema_level=True))
    casts = {}
    for name, col in columns.items():
        if name not in df.columns:
            continue
        target = col.dtype.type  # the polars dtype
        have = df[name]
        if have.dtype == target:
            continue
        try:
            cast = have.cast(target, strict=False)
        except Exception:  # polars refuses the conversion outright (str -> list, str -> bool)
            failures.append(_wrong_type(name, target, have, have.is_not_null()))
            continue
        lost = have.is_not_null() & cast.is_null()
        if have.dtype.is_float() and target.is_integer():  # 7.5 -> 7 is not a conversion
            lost = lost | (have.is_not_null() & (cast.cast(pl.Float64) != have).fill_null(True))
        n_lost = int(lost.sum())
        if n_lost and n_lost == int(have.is_not_null().sum()):  # nothing converts: the column is wrong
            failures.append(_wrong_type(name, target, have, lost))
            continue
        for i in lost.arg_true().to_list():
            failures.append(Failure(name, f"not a valid {target}", check=f"dtype {target}",
                                    found=_short(have[i]), row=i))
        casts[name] = cast
    if casts:
        df = df.with_columns(**casts)
    return df, failures


def _wrong_type(name: str, target: pl.DataType, have: pl.Series, bad: pl.Series) -> Failure:
    """The whole column has the wrong type: one failure, shown at its first value."""
    rows = bad.arg_true()
    if rows.is_empty():
        return Failure(name, f"wrong type (expected {target})", found=str(have.dtype), schema_level=True)
    first = rows[0]
    return Failure(name, f"wrong type (expected {target})",
                   found=f"{_short(have[first])} ({have.dtype}; no value in the column converts)",
                   row=first, schema_level=True)


# ---------------------------------------------------------------- pandera failures


_BOUNDS = {
    "greater_than_or_equal_to": ("below", ">="),
    "greater_than": ("not above", ">"),
    "less_than_or_equal_to": ("above", "<="),
    "less_than": ("not below", "<"),
}
_BUILTIN = {"str_length", "str_contains", "str_matches", "isin", "notin", "in_range", "equal_to",
            "not_equal_to", *_BOUNDS}


def _describe(column: str, check: pa.Check | None, check_text: str) -> tuple[str, str]:
    """(what is wrong in words, the rule) for one pandera check on one column."""
    if check is None:
        if check_text == "not_nullable":
            return f"missing {column}", "not null"
        if check_text == "field_uniqueness":
            return f"duplicate {column}", "unique"
        return f"{column} failed {check_text}", check_text
    stats = check.statistics or {}
    name = check.name
    if name not in _BUILTIN:  # a custom check: its error text says what is expected
        return f"{column} {check.error}" if check.error else f"{column} failed {name}", name
    if name == "str_length":
        lo, hi = stats.get("min_value"), stats.get("max_value")
        if lo == 1 and hi is None:
            return f"empty {column}", "str_length >= 1"
        return f"{column} has the wrong length", f"str_length in [{lo}, {hi}]"
    if name == "str_contains" and stats.get("pattern") == r"\S":
        return f"empty {column}", "not blank after stripping whitespace"
    if name == "isin":
        allowed = ", ".join(map(repr, stats.get("allowed_values", [])))
        return f"unknown {column}", f"one of {allowed}"
    if name in _BOUNDS:
        word, op = _BOUNDS[name]
        (value,) = stats.values()
        return f"{column} {word} {value}", f"{column} {op} {value}"
    if name == "in_range":
        return f"{column} out of range", f"{stats.get('min_value')} <= {column} <= {stats.get('max_value')}"
    return f"{column} failed {name}", check_text


def _passes(df: pl.DataFrame, model: pa.DataFrameSchema) -> bool:
    """Whether `df` (coerced) passes every rule pandera would run: dtypes, nulls (NaN
    counts as null, as in pandera), unique columns and each check, through pandera's
    own check functions and null handling, all in one `collect_all`. False also when
    the schema has a rule this does not evaluate; pandera then decides."""
    if model.unique or model.ordered or any(name not in df.columns for name in model.columns):
        return False
    frame, queries = df.lazy(), []
    try:
        for name, column in model.columns.items():
            if column.regex or (column.dtype is not None and column.dtype.check(
                    df.schema[name], PolarsData(frame.select(name), name)) is not True):
                return False
            value = pl.col(name)
            if not column.nullable:
                present = value.is_not_null() & (value.is_not_nan() if df.schema[name].is_float() else True)
                queries.append(frame.select(present.all()))
            if column.unique:
                queries.append(frame.select(value.is_duplicated().any().not_()))
            queries += [_check_passes(check, frame, name) for check in column.checks]
        queries += [_check_passes(check, frame, "*") for check in model.checks]
        return all(result.item() is True for result in pl.collect_all(queries))
    except Exception:  # a check that raises fails in pandera too, and a check made before
        return False  # pandera registered its polars functions has none: let pandera decide


def _check_passes(check: pa.Check, frame: pl.LazyFrame, key: str) -> pl.LazyFrame:
    """A one-cell frame: whether `check` passes on `key`, as pandera's
    PolarsCheckBackend decides it (ignore_na: a null outcome passes)."""
    out = PolarsCheckBackend(check).apply(PolarsData(frame, key))
    if isinstance(out, bool):
        return pl.LazyFrame({CHECK_OUTPUT_KEY: [out]})
    outcome = pl.col(CHECK_OUTPUT_KEY)
    outcome = outcome | outcome.is_null() if check.ignore_na else outcome.fill_null(False)
    return out.select(outcome.all())


def _pandera_failures(df: pl.DataFrame, model: pa.DataFrameSchema) -> list[Failure]:
    if _passes(df, model):
        return []
    try:
        model.validate(df, lazy=True)
    except SchemaErrors as e:
        cases = e.failure_cases
    else:
        return []
    failures = []
    for case in cases.iter_rows(named=True):
        column = case["column"] if case["column"] in model.columns else None
        check = None
        if column is not None and case["check_number"] is not None:
            checks = model.columns[column].checks
            if 0 <= case["check_number"] < len(checks):
                check = checks[case["check_number"]]
        elif column is None and case["check_number"] is not None:
            if 0 <= case["check_number"] < len(model.checks):
                check = model.checks[case["check_number"]]
        problem, rule = _describe(column or _name(model), check, case["check"])
        row = case["index"]
        found = None
        if row is not None and column is not None:
            value = df.get_column(column).slice(row, 1).to_list()[0]
            found = _short(value)
            if case["check"] == "not_nullable" and isinstance(value, float) and math.isnan(value):
                problem, rule = f"{column} is NaN", "a number"  # pandera counts NaN as null
        elif case["failure_case"] is not None:
            found = _short(case["failure_case"])
        failures.append(Failure(column, problem, rule, found, row, schema_level=row is None))
    return failures


# ---------------------------------------------------------------- the two entry points


def check(df: pl.DataFrame, schema, *, id_column: str | None = "id") -> tuple[pl.DataFrame, list[Failure]]:
    """The coerced frame and every failure, each naming its row id where it has a row.
    The frame is only trustworthy when no failure is schema-level."""
    model = _model(schema)
    coerced, failures = _coerce(df, model)
    if not any(f.schema_level for f in failures):
        bad_cells = {(f.row, f.column) for f in failures}
        failures += [f for f in _pandera_failures(coerced, model) if (f.row, f.column) not in bad_cells]
    ids = _ids(df, id_column)
    failures = [_with_id(f, ids) for f in failures]
    return coerced, _merge_duplicates(failures, coerced, ids)


def _ids(df: pl.DataFrame, id_column: str | None) -> list[Any] | None:
    if id_column is None or id_column not in df.columns:
        return None
    return df[id_column].to_list()


def _with_id(f: Failure, ids: list[Any] | None) -> Failure:
    if f.row is None or ids is None or ids[f.row] is None:
        return f
    return replace(f, row_id=str(ids[f.row]))


def _merge_duplicates(failures: list[Failure], df: pl.DataFrame, ids: list[Any] | None) -> list[Failure]:
    """Pandera reports every row of a duplicated value: say in each which rows share it,
    and mark the first (split_valid keeps it)."""
    out, groups = [], {}
    for f in failures:
        if f.check == "unique" and f.row is not None and f.column in df.columns:
            value = df.get_column(f.column).slice(f.row, 1).to_list()[0]
            groups.setdefault((f.column, repr(value)), []).append(f)
        else:
            out.append(f)
    for group in groups.values():
        group.sort(key=lambda f: f.row)
        rows = [f.row for f in group]
        same_ids = ids is None or all(_short(ids[r]) == group[0].found for r in rows)  # the id column
        shown = [str(r) if same_ids else f"{r} (id {_short(ids[r])})" for r in rows[:MAX_LINES]]
        where = ", ".join(shown) + (f" and {len(rows) - MAX_LINES} more" if len(rows) > MAX_LINES else "")
        for f in group:
            out.append(replace(f, found=f"{f.found} in rows {where}", first=rows[0]))
    return out


def message(path: str | Path, failures: list[Failure], schema=None) -> str:
    """The people-facing report: the file, then one line per failure, capped."""
    lines = []
    shown = set()
    for f in failures:
        if f.first is not None:
            key = (f.column, f.first)  # one line per duplicated value
            if key in shown:
                continue
            shown.add(key)
        lines.append(f.line(str(path)))
    head = f"{path}: {len(lines)} problem{'s' * (len(lines) != 1)}"
    if schema is not None:
        head += f" against schema {_name(schema)}"
    more = len(lines) - MAX_LINES
    body = lines[:MAX_LINES] + ([f"... and {more} more"] if more > 0 else [])
    return "\n".join([head, *body])


def validate(df: pl.DataFrame, schema, *, path: str | Path, id_column: str | None = "id") -> pl.DataFrame:
    """The frame coerced to `schema`, or ArtifactError naming file, row id and column
    for every failure (missing or extra column, uncoercible dtype, value checks,
    duplicate ids)."""
    if isinstance(df, pl.LazyFrame):
        df = df.collect()  # a LazyFrame would only get its schema checked
    coerced, failures = check(df, schema, id_column=id_column)
    if failures:
        raise ArtifactError(message(path, failures, schema), tuple(failures))
    return coerced


def split_valid(
    df: pl.DataFrame, schema, *, path: str | Path, id_column: str | None = "id"
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(valid rows coerced to `schema`, quarantine rows) for stages that can continue.

    A row failing a value check goes to quarantine (schemas.quarantine) with its
    reasons; of rows sharing an id the first stays and the others go. A failure
    of the frame itself (missing or extra column, a column of the wrong type)
    still raises ArtifactError: no row could be trusted."""
    if isinstance(df, pl.LazyFrame):
        df = df.collect()
    coerced, failures = check(df, schema, id_column=id_column)
    fatal = [f for f in failures if f.schema_level]
    if fatal:
        raise ArtifactError(message(path, fatal, schema), tuple(fatal))
    by_row: dict[int, list[Failure]] = {}
    for f in failures:
        if f.first is not None and f.row == f.first:
            continue  # the first of a duplicated id is kept
        by_row.setdefault(f.row, []).append(f)
    rows = sorted(by_row)
    quarantine = quarantine_frame(
        [
            {
                "source_file": str(path),
                "row_id": by_row[i][0].row_id,
                "column": ", ".join(dict.fromkeys(f.column for f in by_row[i] if f.column)) or None,
                "reason": "; ".join(f.reason for f in by_row[i]),
                "row": row_json(df.row(i, named=True)),
            }
            for i in rows
        ]
    )
    valid = coerced.with_row_index("__row").filter(~pl.col("__row").is_in(rows)).drop("__row")
    return valid, quarantine


def row_json(row: dict[str, Any]) -> str:
    """A row as JSON text, keys in column order (dates and other odd values as text)."""
    return json.dumps(row, ensure_ascii=False, default=str)


def quarantine_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Quarantine rows as a frame with the Quarantine schema's columns (also when empty)."""
    return pl.DataFrame(rows, schema=QUARANTINE_COLUMNS)
