"""The spend ledger: one row per paid answer, sums by run, stage and role, kept on disk."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from honing.calls.ledger import Account, SpendLedger, current_run, default_ledger_path


def test_records_and_sums_by_run_stage_and_role(tmp_path):
    ledger = SpendLedger(tmp_path / "spend.sqlite")
    ledger.record(Account("r1", "generate@it1", "policy"), "gpt", "k1", 100, 20, 0.25)
    ledger.record(Account("r1", "generate@it1", "policy"), "gpt", "k2", 100, 40, 0.5)
    ledger.record(Account("r1", "refine@it1", "critic"), "big", "k3", 300, 60, 1.0)
    ledger.record(Account("r2", "generate@it1", "policy"), "gpt", "k1", 100, 20, 0.25)
    assert ledger.total("r1") == (pytest.approx(1.75), 3)
    assert ledger.total("r1", "generate@it1") == (pytest.approx(0.75), 2)
    assert ledger.total("r1", "refine@it1", "critic") == (pytest.approx(1.0), 1)
    assert ledger.total("r1", "refine@it1", "policy") == (0.0, 0)
    assert ledger.total("r3") == (0.0, 0)
    rows = [{k: v for k, v in row.items() if k not in ("first", "last")} for row in ledger.summary("r1")]
    assert rows == [
        {"run": "r1", "stage": "generate@it1", "role": "policy", "model": "gpt", "calls": 2,
         "prompt_tokens": 200, "completion_tokens": 60, "cost_usd": pytest.approx(0.75)},
        {"run": "r1", "stage": "refine@it1", "role": "critic", "model": "big", "calls": 1,
         "prompt_tokens": 300, "completion_tokens": 60, "cost_usd": pytest.approx(1.0)},
    ]
    assert [row["run"] for row in ledger.summary()] == ["r1", "r1", "r2"]


def test_reading_an_empty_ledger_creates_nothing_and_what_is_recorded_survives_reopening(tmp_path):
    path = tmp_path / "sub" / "spend.sqlite"
    ledger = SpendLedger(path)
    assert ledger.total("r1") == (0.0, 0) and ledger.summary() == []
    assert not path.exists()
    ledger.record(Account("r1", "generate@it1", "policy"), "gpt", "k1", 100, 20, 0.25)
    ledger.close()
    with SpendLedger(path) as again:
        assert again.total("r1", "generate@it1", "policy") == (0.25, 1)


WRITER = textwrap.dedent("""
    import sys
    from honing.calls.ledger import Account, SpendLedger

    path, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ledger = SpendLedger(path)
    for i in range(count):
        ledger.record(Account("r1", name, "policy"), "gpt", f"{name}-{i}", 10, 5, 0.001)
""")


def test_concurrent_writers_lose_no_row(tmp_path):
    path, count = tmp_path / "spend.sqlite", 200
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"stage{w}", str(count)])
               for w in range(3)]
    assert [w.wait(timeout=60) for w in writers] == [0, 0, 0]
    ledger = SpendLedger(path)
    assert ledger.total("r1") == (pytest.approx(3 * count * 0.001), 3 * count)
    assert all(ledger.total("r1", f"stage{w}").calls == count for w in range(3))


def test_the_ledger_sits_beside_the_request_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HONING_CACHE_DIR", str(tmp_path))
    assert default_ledger_path() == tmp_path / "spend.sqlite"
    assert SpendLedger().path == tmp_path / "spend.sqlite"


def test_a_run_is_honing_run_else_the_project_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HONING_RUN", raising=False)
    assert current_run() == str(tmp_path.resolve())
    monkeypatch.setenv("HONING_RUN", "march-budget")
    assert current_run() == "march-budget"
