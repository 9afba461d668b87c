"""Repeated values within groups (honing.method.repeats): the rows polars'
is_first_distinct / is_last_distinct of (group, value) give, by either path."""

from __future__ import annotations

import random

import polars as pl
import pytest

from honing.method import repeats as repeats_module
from honing.method.repeats import repeats


def _frame(rng: random.Random, n: int, sorted_groups: bool) -> pl.DataFrame:
    groups = [rng.choice("abcdefg") for _ in range(n)]
    return pl.DataFrame({"g": sorted(groups) if sorted_groups else groups,
                         "v": [rng.choice(["x", "y", "z", None]) for _ in range(n)],
                         "k": [rng.choice([True, False, None]) for _ in range(n)]},
                        schema={"g": pl.String, "v": pl.String, "k": pl.Boolean})


def _distinct(frame: pl.DataFrame, among: pl.Expr | None, later: bool) -> list[bool]:
    keep = pl.lit(True) if among is None else among.fill_null(False)
    key = pl.when(keep).then(pl.struct("g", "v"))
    return frame.select(keep & (key.is_last_distinct() if later else key.is_first_distinct()).not_()
                        ).to_series().to_list()


@pytest.mark.parametrize("sorted_groups", [True, False])  # runs of rows (neighbours compared), or not (hashed)
def test_repeats_are_the_rows_is_first_or_last_distinct_leaves_out(sorted_groups):
    rng = random.Random(7)
    for n in [0, 1, 2, *range(3, 60, 4)]:
        frame = _frame(rng, n, sorted_groups)
        for later in (False, True):
            for among in (None, pl.col("k")):
                assert repeats(frame, "g", "v", among=among, later=later).to_list() == _distinct(frame, among, later)


def test_runs_longer_than_the_neighbours_compared_take_the_hash_table(monkeypatch):
    frame = pl.DataFrame({"g": ["a"] * 6 + ["b"] * 2, "v": ["x", "y", "z", "w", "u", "x", "x", "x"]})
    assert repeats(frame, "g", "v").to_list() == [False] * 5 + [True, False, True]
    monkeypatch.setattr(repeats_module, "MAX_RUN", 3)  # a's run of 6: its first row is 5 rows before the repeat
    assert repeats(frame, "g", "v").to_list() == [False] * 5 + [True, False, True]
    assert repeats(frame, "g", "v", later=True).to_list() == [True] + [False] * 5 + [True, False]
