"""Work ahead of a stream's consumer (honing.artifacts.ahead): order kept, bounded."""

from __future__ import annotations

import threading
import time

import pytest

from honing.artifacts.ahead import ordered_map, read_ahead


def test_ordered_map_keeps_the_order_when_later_items_finish_first():
    def slow_first(x: int) -> int:
        time.sleep(0.05 if x % 3 == 0 else 0.0)
        return x * x

    assert list(ordered_map(slow_first, range(20), workers=2)) == [x * x for x in range(20)]


def test_ordered_map_runs_in_threads_but_pulls_items_in_the_callers_thread():
    caller, pulled_in, ran_in = threading.current_thread(), set(), set()

    def items():
        for x in range(6):
            pulled_in.add(threading.current_thread())
            yield x

    def work(x: int) -> int:
        ran_in.add(threading.current_thread())
        return x

    assert list(ordered_map(work, items(), workers=2)) == list(range(6))
    assert pulled_in == {caller} and caller not in ran_in
    ran_in.clear()
    assert list(ordered_map(work, items(), workers=1)) == list(range(6))
    assert ran_in == {caller}  # one worker: a plain map, for functions that must not run beside themselves


def test_ordered_map_holds_at_most_workers_items_ahead_of_the_consumer():
    pulled = []

    def items():
        for x in range(50):
            pulled.append(x)
            yield x

    for k, _ in enumerate(ordered_map(lambda x: x, items(), workers=2)):
        assert len(pulled) <= k + 2  # the item handed over and at most one more computed ahead


def test_ordered_map_raises_the_first_failure_in_order():
    def work(x: int) -> int:
        if x in (3, 5):
            raise ValueError(f"item {x}")
        return x

    got = []
    with pytest.raises(ValueError, match="item 3"):
        for x in ordered_map(work, range(10)):
            got.append(x)
    assert got == [0, 1, 2]


def test_read_ahead_gives_every_item_in_order():
    assert list(read_ahead(iter(range(7)))) == list(range(7))
    assert list(read_ahead(iter([]))) == []
