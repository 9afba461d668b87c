"""A content-addressed cache of model calls: request key -> result, in SQLite.

The key is `ChatRequest.cache_key(model_id)`, so the same prompt, sampling params,
template version and model always find the same answer, whichever stage or process
asks. Every answer is committed as it arrives (WAL mode, one short transaction per
write), so a run killed with SIGKILL loses only the calls it had in flight, and a
rerun pays only for those. Several processes may read and write one file at once:
WAL lets readers run beside the writer, and `busy_timeout` makes writers queue
instead of failing.

The file is created on the first write, so a run that answers nothing (a bad API
key) leaves nothing behind. It must live outside DVC outputs (DVC deletes outputs
before rerunning a stage): by default `~/.cache/honing/requests.sqlite`.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterable, Mapping

from honing.calls.backends.base import ChatResult

BUSY_TIMEOUT_MS = 60_000
_SQL_VARIABLES_PER_QUERY = 500  # well under SQLite's limit on `?` placeholders

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key       TEXT PRIMARY KEY,
    model     TEXT NOT NULL,
    value     TEXT NOT NULL,
    created   REAL NOT NULL,
    last_used REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
# No index on model or last_used: every answer is a write on the hot path, while
# `prune` and `stats` are rare and scan a million rows in well under a second.


def default_cache_path() -> Path:
    """`$HONING_CACHE_DIR/requests.sqlite`, else `~/.cache/honing/requests.sqlite`."""
    folder = os.environ.get("HONING_CACHE_DIR")
    base = Path(folder) if folder else Path.home() / ".cache" / "honing"
    return base / "requests.sqlite"


class RequestCache:
    """Request key -> `ChatResult` JSON. Thread-safe; safe with several processes."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else default_cache_path()
        self.hits = 0  # this instance's lookups; stats() adds the file's lifetime totals
        self.misses = 0
        self.bytes_written = 0
        self._unrecorded = {"misses": 0}  # misses seen before the file existed
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    # ---- connection ------------------------------------------------------------------
    def _connect(self, create: bool) -> sqlite3.Connection | None:
        """The open connection; None when the file does not exist and `create` is False."""
        if self._conn is not None:
            return self._conn
        if not create and not self.path.exists():
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a writer takes the
        # write lock up front and waits (busy_timeout) rather than failing on upgrade.
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._retry_locked(lambda: conn.execute("PRAGMA journal_mode = WAL"))
        # NORMAL in WAL mode survives a killed process (only power loss can drop the
        # last commits), at a fraction of FULL's fsync cost per answer.
        conn.execute("PRAGMA synchronous = NORMAL")
        # Checkpoint (the only fsync under NORMAL) every ~16 MB of WAL rather than 4 MB.
        conn.execute("PRAGMA wal_autocheckpoint = 4000")
        self._retry_locked(lambda: conn.executescript(_SCHEMA))
        self._conn = conn
        return conn

    @staticmethod
    def _retry_locked(action, attempts: int = 50) -> None:
        # Switching a brand-new file to WAL needs an exclusive lock that busy_timeout
        # does not always wait for when several processes create the file at once.
        for attempt in range(attempts):
            try:
                action()
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or attempt == attempts - 1:
                    raise
                time.sleep(0.05)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> "RequestCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- reads and writes --------------------------------------------------------------
    def get_many(self, keys: Iterable[str]) -> dict[str, ChatResult]:
        """The cached results among `keys` (marked `cached=True`); marks them used now."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, ChatResult] = {}
        with self._lock:
            conn = self._connect(create=False)
            if conn is not None:
                for start in range(0, len(wanted), _SQL_VARIABLES_PER_QUERY):
                    chunk = wanted[start : start + _SQL_VARIABLES_PER_QUERY]
                    marks = ",".join("?" * len(chunk))
                    for key, value in conn.execute(
                        f"SELECT key, value FROM results WHERE key IN ({marks})", chunk
                    ):
                        found[key] = ChatResult.from_json(value, cached=True)
            self.hits += len(found)
            self.misses += len(wanted) - len(found)
            if conn is None:
                self._unrecorded["misses"] += len(wanted)
            elif wanted:
                self._mark_used(conn, list(found), len(found), len(wanted) - len(found))
        return found

    def get(self, key: str) -> ChatResult | None:
        return self.get_many([key]).get(key)

    def _mark_used(self, conn: sqlite3.Connection, keys: list[str], hits: int, misses: int) -> None:
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for start in range(0, len(keys), _SQL_VARIABLES_PER_QUERY):
                chunk = keys[start : start + _SQL_VARIABLES_PER_QUERY]
                marks = ",".join("?" * len(chunk))
                conn.execute(f"UPDATE results SET last_used = ? WHERE key IN ({marks})", [now, *chunk])
            self._add_counters(conn, {"hits": hits, "misses": misses})
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _add_counters(conn: sqlite3.Connection, amounts: Mapping[str, int]) -> None:
        conn.executemany(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            [(name, amount) for name, amount in amounts.items() if amount],
        )

    def put(self, key: str, result: ChatResult, model: str) -> int:
        """Store one answer, committed before returning. Returns the bytes written
        (0 when another process stored the same key first: its answer is kept)."""
        value = result.to_json()
        now = time.time()
        with self._lock:
            conn = self._connect(create=True)
            conn.execute("BEGIN IMMEDIATE")
            try:
                cursor = conn.execute(
                    "INSERT INTO results (key, model, value, created, last_used) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (key) DO NOTHING",
                    (key, model, value, now, now),
                )
                written = len(value.encode()) if cursor.rowcount == 1 else 0
                self._add_counters(conn, {"bytes_written": written, **self._unrecorded})
                self._unrecorded = {"misses": 0}
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self.bytes_written += written
        return written

    # ---- maintenance ---------------------------------------------------------------------
    def stats(self) -> dict:
        """Rows, bytes and models in the file, lifetime hits/misses, and this instance's."""
        session = {"hits": self.hits, "misses": self.misses, "bytes_written": self.bytes_written}
        with self._lock:
            conn = self._connect(create=False)
            if conn is None:
                return {"path": str(self.path), "exists": False, "rows": 0, "value_bytes": 0,
                        "file_bytes": 0, "models": {}, "lifetime": {}, "session": session}
            rows, value_bytes = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(CAST(value AS BLOB))), 0) FROM results"
            ).fetchone()
            models = dict(conn.execute("SELECT model, COUNT(*) FROM results GROUP BY model ORDER BY model"))
            lifetime = dict(conn.execute("SELECT name, value FROM counters ORDER BY name"))
        file_bytes = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*"))
        return {"path": str(self.path), "exists": True, "rows": rows, "value_bytes": value_bytes,
                "file_bytes": file_bytes, "models": models, "lifetime": lifetime, "session": session}

    def prune(self, older_than_days: float | None = None, model: str | None = None) -> int:
        """Delete rows not used for `older_than_days` and/or of `model`; returns how many."""
        if older_than_days is None and model is None:
            raise ValueError("prune: give older_than_days and/or model "
                             "(to drop everything, delete the cache file)")
        clauses, args = [], []
        if older_than_days is not None:
            clauses.append("last_used < ?")
            args.append(time.time() - older_than_days * 86400)
        if model is not None:
            clauses.append("model = ?")
            args.append(model)
        with self._lock:
            conn = self._connect(create=False)
            if conn is None:
                return 0
            conn.execute("BEGIN IMMEDIATE")
            deleted = conn.execute(f"DELETE FROM results WHERE {' AND '.join(clauses)}", args).rowcount
            conn.execute("COMMIT")
            # Give the freed pages back to the file system, not only to SQLite.
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            if deleted:
                conn.execute("VACUUM")
        return deleted
