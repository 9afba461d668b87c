"""The request cache: round trips, counters, pruning, and several writer processes."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from pathlib import Path

import pytest

from honing.calls.backends.base import (
    ChatRequest,
    ChatResult,
    Completion,
    SamplingParams,
)
from honing.calls.cache import RequestCache, default_cache_path


def result(text: str, model: str = "m") -> ChatResult:
    return ChatResult(completions=(Completion(text, "stop"),), prompt_tokens=3, completion_tokens=2, model=model)


def key(i: int, model: str = "m") -> str:
    return ChatRequest(messages=({"role": "user", "content": f"q{i}"},)).cache_key(model)


def test_round_trip_marks_results_cached(tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    written = cache.put(key(1), result("one"), model="m")
    assert written == len(result("one").to_json().encode())
    got = cache.get(key(1))
    assert got == ChatResult(completions=(Completion("one", "stop"),), prompt_tokens=3,
                             completion_tokens=2, model="m", cached=True)
    assert cache.get(key(2)) is None


def test_lookups_do_not_create_the_file(tmp_path):
    path = tmp_path / "sub" / "c.sqlite"
    cache = RequestCache(path)
    assert cache.get_many([key(1), key(2)]) == {}
    assert cache.stats()["exists"] is False
    assert not path.exists() and not path.parent.exists()


def test_file_is_in_wal_mode(tmp_path):
    path = tmp_path / "c.sqlite"
    RequestCache(path).put(key(1), result("x"), model="m")
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_first_answer_wins_and_costs_no_bytes_twice(tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    assert cache.put(key(1), result("first"), model="m") > 0
    assert cache.put(key(1), result("second"), model="m") == 0
    assert cache.get(key(1)).text == "first"


def test_stats_counts_hits_misses_bytes_in_session_and_file(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = RequestCache(path)
    cache.get_many([key(1), key(2)])  # two misses before the file exists
    cache.put(key(1), result("one"), model="model-a")
    cache.put(key(2), result("two"), model="model-b")
    cache.get_many([key(1), key(2), key(3)])
    stats = cache.stats()
    bytes_written = len(result("one").to_json()) + len(result("two").to_json())
    assert stats["session"] == {"hits": 2, "misses": 3, "bytes_written": bytes_written}
    assert stats["rows"] == 2 and stats["value_bytes"] == bytes_written
    assert stats["models"] == {"model-a": 1, "model-b": 1}
    # Lifetime counters live in the file: a new instance (another process) sees them.
    assert RequestCache(path).stats()["lifetime"] == {"hits": 2, "misses": 3, "bytes_written": bytes_written}


def test_prune_by_age_and_by_model(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = RequestCache(path)
    for i in range(6):
        cache.put(key(i), result(str(i)), model="old-model" if i < 2 else "new-model")
    # Rows 0-3 were last used 10 days ago.
    with sqlite3.connect(path) as db:
        db.executemany("UPDATE results SET last_used = ? WHERE key = ?",
                       [(time.time() - 10 * 86400, key(i)) for i in range(4)])
    cache.get(key(3))  # a hit makes row 3 recent again
    assert cache.prune(older_than_days=5, model="old-model") == 2
    assert cache.prune(older_than_days=5) == 1  # row 2; row 3 was just used
    assert sorted(cache.get_many([key(i) for i in range(6)])) == sorted([key(3), key(4), key(5)])
    assert cache.prune(model="new-model") == 3
    assert cache.stats()["rows"] == 0
    with pytest.raises(ValueError, match="older_than_days and/or model"):
        cache.prune()


def test_default_path_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HONING_CACHE_DIR", str(tmp_path / "here"))
    assert default_cache_path() == tmp_path / "here" / "requests.sqlite"
    assert RequestCache().path == tmp_path / "here" / "requests.sqlite"
    monkeypatch.delenv("HONING_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_path() == tmp_path / "home" / ".cache" / "honing" / "requests.sqlite"


def _writer(path: str, worker: int, count: int, start_at: float) -> None:
    while time.time() < start_at:  # start together so the writes really overlap
        time.sleep(0.001)
    cache = RequestCache(path)
    for i in range(count):
        # Half the keys are shared by all workers, half are this worker's own.
        shared = i % 2 == 0
        k = key(i) if shared else key(1000 * (worker + 1) + i)
        cache.put(k, result(f"shared {i}" if shared else f"w{worker} {i}"), model="m")
        cache.get_many([key(i), key(i + 1)])


def test_several_processes_write_one_file_at_once(tmp_path):
    path = str(tmp_path / "c.sqlite")  # not created yet: the workers race to create it too
    context = multiprocessing.get_context("fork")
    start_at = time.time() + 0.3
    workers = [context.Process(target=_writer, args=(path, w, 120, start_at)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=60)
    assert [p.exitcode for p in workers] == [0, 0, 0, 0]
    cache = RequestCache(path)
    assert cache.stats()["rows"] == 60 + 4 * 60
    got = cache.get_many([key(i) for i in range(0, 120, 2)])
    assert {k: r.text for k, r in got.items()} == {key(i): f"shared {i}" for i in range(0, 120, 2)}
    for w in range(4):
        own = cache.get_many([key(1000 * (w + 1) + i) for i in range(1, 120, 2)])
        assert sorted(r.text for r in own.values()) == sorted(f"w{w} {i}" for i in range(1, 120, 2))


def test_cache_file_survives_reopen(tmp_path):
    path = Path(tmp_path / "c.sqlite")
    with RequestCache(path) as cache:
        cache.put(key(7), result("seven", model="x"), model="x")
    with RequestCache(path) as again:
        assert again.get(key(7)).text == "seven"


def test_request_params_enter_the_key():
    a = ChatRequest(messages=({"role": "user", "content": "q"},))
    b = ChatRequest(messages=({"role": "user", "content": "q"},), params=SamplingParams(temperature=0.7))
    c = ChatRequest(messages=({"role": "user", "content": "q"},), template_version="v2")
    assert len({a.cache_key("m"), b.cache_key("m"), c.cache_key("m"), a.cache_key("other")}) == 4
