"""Work on a stream ahead of its consumer, in threads.

polars releases the GIL while it computes, and most of its work on one frame runs
on one core: a frame read, or computed, in a worker thread overlaps what the
consumer does with the previous one on another core. Both keep the stream's order
and hold a fixed number of items ahead, so memory stays bounded.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Frames computed at once by `ordered_map`: one while the consumer writes the one
# before (filter at 1.08 M rows on 2 cores: 1.91 -> 1.58 s, a frame more held).
WORKERS = 2


def read_ahead(items: Iterator[T]) -> Iterator[T]:
    """`items`, the next one pulled in a worker thread while the caller works on this
    one. One item more is held."""
    with ThreadPoolExecutor(1, thread_name_prefix="honing-read") as worker:
        coming = worker.submit(next, items, None)
        while (item := coming.result()) is not None:
            coming = worker.submit(next, items, None)
            yield item


def ordered_map(function: Callable[[T], R], items: Iterable[T], workers: int = WORKERS) -> Iterator[R]:
    """`map(function, items)`, with up to `workers` calls running at once in threads;
    results in the items' order. The items are pulled in the caller's thread (a
    stream need not be thread-safe), and at most `workers` results wait. With
    `workers` 1, a plain map in the caller's thread (for functions that must not run
    beside themselves, e.g. a model's forward pass)."""
    if workers <= 1:
        yield from map(function, items)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="honing-work") as pool:
        pending: deque[Future[R]] = deque()
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
