"""Money: a ledger of what every paid answer cost, and the budgets that read it.

The ledger is an SQLite file beside the request cache (`spend.sqlite` in
`$HONING_CACHE_DIR`, else ~/.cache/honing), never a DVC output, so it outlives
failed and killed runs. `run_requests` books each paid answer here before it
caches it: a kill between the two can over-count the one answer being stored,
never under-count. Cached answers cost nothing and are not booked again, so
every dollar is counted once. Its own file, not a table of the cache: deleting
or pruning the cache must not forget what was paid.

Each row is booked to a run, a stage and a role. A run is a budget period:
`$HONING_RUN` if set, else the absolute path of the project root (the stage's
working directory). `HONING_RUN=<name> dvc repro` starts a new period; queued
DVC experiments run in temporary folders, so each is a run of its own.

A `Budget` is what one role may spend in one stage process, shared by all its
calls: the role's cap bounds the ledger's sum over (run, stage, role), earlier
failed attempts included; the run's cap bounds the sum over the run. Both apply
and the smaller remainder wins.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from honing.calls.cache import BUSY_TIMEOUT_MS, RequestCache, default_cache_path
from honing.errors import HoningError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spend (
    time              REAL    NOT NULL,  -- unix seconds, when the answer arrived
    run               TEXT    NOT NULL,  -- $HONING_RUN, else the project root's absolute path
    stage             TEXT    NOT NULL,  -- e.g. generate@it1
    role              TEXT    NOT NULL,  -- policy, critic, ...
    model             TEXT    NOT NULL,  -- the backend's model id
    request_key       TEXT    NOT NULL,  -- the answer's request cache key
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_usd          REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS spend_by_run ON spend (run, stage, role);
"""


class CostSettingError(HoningError, ValueError):
    """A bad `price:` block or `max_cost_usd`; the message names where it sits."""


def default_ledger_path() -> Path:
    """`spend.sqlite` beside the request cache (`$HONING_CACHE_DIR` or ~/.cache/honing)."""
    return default_cache_path().with_name("spend.sqlite")


def current_run() -> str:
    """`$HONING_RUN` if set, else the absolute path of the working directory (the project root)."""
    return os.environ.get("HONING_RUN") or str(Path.cwd().resolve())


def check_cap(value: Any, where: str) -> float | None:
    """A spend cap from params: None, or a finite number of US dollars >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CostSettingError(f"{where}: expected a number of US dollars >= 0 (or null for no cap), "
                               f"found {value!r}")
    if value < 0:
        raise CostSettingError(f"{where}: must be >= 0 US dollars, found {value!r}")
    return float(value)


@dataclass(frozen=True)
class Account:
    """Where spend is booked: one run, one stage, one role."""

    run: str
    stage: str
    role: str


class Spent(NamedTuple):
    cost_usd: float
    calls: int


class SpendLedger:
    """Paid answers, one row each. Thread-safe; several processes may write at once."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else default_ledger_path()
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _connect(self, create: bool) -> sqlite3.Connection | None:
        """The open connection; None when the file does not exist and `create` is False
        (reading an empty ledger creates nothing)."""
        if self._conn is not None:
            return self._conn
        if not create and not self.path.exists():
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        RequestCache._retry_locked(lambda: conn.execute("PRAGMA journal_mode = WAL"))
        conn.execute("PRAGMA synchronous = NORMAL")  # survives a killed process, as the cache does
        RequestCache._retry_locked(lambda: conn.executescript(_SCHEMA))
        self._conn = conn
        return conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> SpendLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def record(self, account: Account, model: str, request_key: str, prompt_tokens: int,
               completion_tokens: int, cost_usd: float) -> None:
        """Book one paid answer, committed before returning."""
        row = (time.time(), account.run, account.stage, account.role, model, request_key,
               prompt_tokens, completion_tokens, cost_usd)
        with self._lock:
            conn = self._connect(create=True)
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("INSERT INTO spend VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def total(self, run: str, stage: str | None = None, role: str | None = None) -> Spent:
        """What the run (or one stage of it, or one role in that stage) has spent."""
        clauses, args = ["run = ?"], [run]
        for column, value in (("stage", stage), ("role", role)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        with self._lock:
            conn = self._connect(create=False)
            if conn is None:
                return Spent(0.0, 0)
            cost, calls = conn.execute(
                f"SELECT COALESCE(SUM(cost_usd), 0), COUNT(*) FROM spend WHERE {' AND '.join(clauses)}", args
            ).fetchone()
        return Spent(float(cost), int(calls))

    def summary(self, run: str | None = None) -> list[dict[str, Any]]:
        """Spend grouped by run, stage, role and model, in the order they first spent."""
        where, args = ("WHERE run = ?", [run]) if run is not None else ("", [])
        with self._lock:
            conn = self._connect(create=False)
            if conn is None:
                return []
            rows = conn.execute(
                "SELECT run, stage, role, model, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), "
                f"SUM(cost_usd), MIN(time), MAX(time) FROM spend {where} "
                "GROUP BY run, stage, role, model ORDER BY MIN(time)", args
            ).fetchall()
        names = ("run", "stage", "role", "model", "calls", "prompt_tokens", "completion_tokens", "cost_usd",
                 "first", "last")
        return [dict(zip(names, row, strict=True)) for row in rows]


@dataclass
class Budget:
    """What one role may spend in one stage process, in US dollars; one instance serves
    every call the role makes there, so every phase counts against the caps.

    Without a ledger it caps this process's new spend alone (library use)."""

    max_cost_usd: float | None = None  # the role's cap, over (run, stage, role) in the ledger
    run_max_cost_usd: float | None = None  # the run's cap, over the run in the ledger
    ledger: SpendLedger | None = None
    account: Account | None = None
    spent_usd: float = field(default=0.0, init=False)  # this process's new spend
    calls: int = field(default=0, init=False)  # this process's paid answers
    # From the ledger: what was spent before or beside this process.
    _role_before: float = field(default=0.0, init=False, repr=False)
    _role_calls_before: int = field(default=0, init=False, repr=False)
    _run_before: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        self.refresh()

    @property
    def capped(self) -> bool:
        return self.max_cost_usd is not None or self.run_max_cost_usd is not None

    def _booked(self) -> bool:
        return self.ledger is not None and self.account is not None

    def refresh(self) -> None:
        """Re-read the ledger: earlier attempts, other roles and other processes of the run."""
        if not self._booked():
            return
        role = self.ledger.total(self.account.run, self.account.stage, self.account.role)
        run = self.ledger.total(self.account.run)
        # The ledger already holds this process's own answers: count them once.
        self._role_before = role.cost_usd - self.spent_usd
        self._role_calls_before = role.calls - self.calls
        self._run_before = run.cost_usd - self.spent_usd

    def charge(self, model: str, request_key: str, prompt_tokens: int, completion_tokens: int,
               cost_usd: float) -> None:
        """Book one paid answer (in the ledger first, when there is one)."""
        if self._booked():
            self.ledger.record(self.account, model, request_key, prompt_tokens, completion_tokens, cost_usd)
        self.spent_usd += cost_usd
        self.calls += 1

    def remaining(self) -> tuple[float, str] | None:
        """(US dollars left, "role" or "run": the cap that leaves less); None without caps."""
        left = []
        if self.max_cost_usd is not None:
            left.append((self.max_cost_usd - self._role_before - self.spent_usd, "role"))
        if self.run_max_cost_usd is not None:
            left.append((self.run_max_cost_usd - self._run_before - self.spent_usd, "run"))
        return min(left, key=lambda pair: pair[0]) if left else None

    def mean_cost(self) -> float | None:
        """The mean cost of this role's paid answers in this stage of the run so far."""
        calls = self._role_calls_before + self.calls
        return (self._role_before + self.spent_usd) / calls if calls else None

    def stop_message(self, unanswered: int) -> str:
        """One line: which cap stops the role, what was spent by the ledger (answers in
        flight at the stop included), and that a rerun pays only for what is missing."""
        self.refresh()
        _, which = self.remaining() or (0.0, "role")
        limit = (self.max_cost_usd if which == "role" else self.run_max_cost_usd) or 0.0
        again = "Raise max_cost_usd and rerun: the answers so far are cached and cost nothing again."
        if not self._booked():
            return (f"budget reached: spent ${self.spent_usd:.4f} of max_cost_usd ${limit:.4f} "
                    f"on {self.calls} new calls; {unanswered} requests remain unanswered. {again}")
        run, stage, role = self.account.run, self.account.stage, self.account.role
        cap = (f"{role}'s max_cost_usd ${limit:.4f} for {stage}" if which == "role"
               else f"the run's max_cost_usd ${limit:.4f}")
        stage_total = self.ledger.total(run, stage).cost_usd
        run_total = self.ledger.total(run).cost_usd
        return (f"budget reached: {cap} would be passed by {role}'s next call; spent ${stage_total:.4f} in "
                f"{stage} and ${run_total:.4f} in run {run!r} (ledger), ${self.spent_usd:.4f} of it on "
                f"{self.calls} new calls in this attempt; {unanswered} requests remain unanswered. {again}")


@dataclass(frozen=True)
class SpendScope:
    """Where one stage process books its spend (ledger, run, stage) and the run's cap."""

    run: str
    stage: str
    run_max_cost_usd: float | None = None
    ledger: SpendLedger | None = None  # None: the default ledger beside the request cache

    def budget(self, role: str, max_cost_usd: float | None) -> Budget:
        return Budget(max_cost_usd, self.run_max_cost_usd, self.ledger or SpendLedger(),
                      Account(self.run, self.stage, role))
