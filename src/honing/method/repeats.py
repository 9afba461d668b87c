"""Rows that repeat a value within their group: the duplicate rules of filter and
build_pairs (the same response to the same prompt counts once).

polars' `is_first_distinct` over a struct of (group, value) puts every long text in
a hash table: 0.18 s per million final answers, a sixth of filter's time. A frame
streamed in prompt order holds each group as one run of a few rows, and there each
row is compared with the few rows before (or after) it instead, which is exact and
several times faster. Other frames (out of order, or with long runs) take the hash
table; both give the same rows.
"""

from __future__ import annotations

import polars as pl

MAX_RUN = 16  # rows in a group's run up to which rows are compared with their neighbours


def repeats(frame: pl.DataFrame, group: str, value: str, *, among: pl.Expr | None = None,
            later: bool = False) -> pl.Series:
    """Per row of `frame`: whether an earlier row (`later`: a later row) of the same
    `group` holds the same `value` (null equal to null), both rows being `among` (a
    Boolean expression, default every row); False for rows not among them. So
    `~repeats(...)` is `is_first_distinct` (`is_last_distinct`) of (group, value) over
    the rows `among`."""
    keep = pl.lit(True) if among is None else among.fill_null(False)
    if frame.height and frame.get_column(group).is_sorted():  # each group is one run of rows
        longest = frame.select(pl.col(group).rle().struct.field("len").max()).item()
        if longest <= MAX_RUN:
            return _neighbours(frame, group, value, None if among is None else keep, longest, later)
    key = pl.when(keep).then(pl.struct(group, value))
    distinct = key.is_last_distinct() if later else key.is_first_distinct()
    return frame.select((keep & distinct.not_()).alias("repeats")).to_series()


def _neighbours(frame: pl.DataFrame, group: str, value: str, keep: pl.Expr | None, longest: int,
                later: bool) -> pl.Series:
    """`repeats` where no run is longer than `longest` rows: each row against the
    `longest - 1` rows before (after) it; `keep` None: every row."""
    g, v = pl.col(group), pl.col(value)
    same = []
    for k in ([-d for d in range(1, longest)] if later else range(1, longest)):
        match = g.shift(k).eq_missing(g) & v.shift(k).eq_missing(v)
        same.append(match if keep is None else match & keep.shift(k).fill_null(False))
    seen = pl.any_horizontal(same) if same else pl.repeat(False, pl.len())
    # lazy: `keep` and the columns are read once however many neighbours are compared
    return frame.lazy().select((seen if keep is None else keep & seen).alias("repeats")).collect().to_series()
