"""Money in the real `stages/generate.py`: caps hold across call phases and reruns.

The policy runs on the loopback OpenAI-compatible server with a `price:`, so every
answer costs a known amount (the server counts words as tokens). The spend ledger
(`spend.sqlite` beside the request cache) is the ground truth; the server's log
says which calls were really paid for.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import subprocess_env
from test_resume_stage import (
    CANDIDATES,
    CONCURRENCY,
    KEY,
    KEY_ENV,
    METRICS,
    PROGRESS_LINE,
    answered,
    generate_command,
    make_stage_dir,
    openai_policy,
    prompt_pool,
)

from honing.calls.ledger import SpendLedger
from honing.calls.server import ChatServer

NUM_PROMPTS = 40
PRICE = {"input_per_mtok": 10, "output_per_mtok": 10}
# Each prompt is 21 words, echoed back as "echo: <prompt>" (22 words): a greedy call costs
# 21 + 22 tokens, a sampled call (n = 2, the second echo ends "[sample 1]") 21 + 22 + 24, at $10 per million.
GREEDY_USD, SAMPLED_USD = 43 * 10 / 1e6, 67 * 10 / 1e6
IN_FLIGHT_USD = CONCURRENCY * SAMPLED_USD  # what may still arrive after the stop
STAGE = "generate@it1"


@pytest.fixture
def server(tmp_path):
    with ChatServer(api_key=KEY, latency_ms=20, log_path=tmp_path / "requests.jsonl") as chat:
        yield chat


def stage_dir(root: Path, server: ChatServer, run_cap: float | None = None, **policy) -> Path:
    root = make_stage_dir(root, openai_policy(server.url, **policy), prompt_pool(NUM_PROMPTS))
    set_run_cap(root, run_cap)
    return root


def set_run_cap(root: Path, cap) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["max_cost_usd"] = cap
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def cache_dir(root: Path) -> Path:
    return root.parent / f"{root.name}-cache"  # where test_resume_stage's run_generate puts it


def run_generate(root: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(generate_command(), check=False, cwd=root, capture_output=True, text=True, timeout=120,
                          env=subprocess_env(cache_dir(root), **{KEY_ENV: KEY, **env}))


def ledger_of(root: Path) -> SpendLedger:
    return SpendLedger(cache_dir(root) / "spend.sqlite")


def dearest_call(root: Path) -> float:
    with sqlite3.connect(cache_dir(root) / "spend.sqlite") as conn:
        return conn.execute("SELECT MAX(cost_usd) FROM spend").fetchone()[0]


def budget_failure(root: Path, result: subprocess.CompletedProcess) -> str:
    """The one line a stage stopped by its budget prints; nothing of the stage is written."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: budget reached: "), result.stderr
    assert not [line for line in lines[:-1] if not PROGRESS_LINE.match(line)], result.stderr
    assert not (root / CANDIDATES).exists() and not (root / METRICS).exists()
    return lines[-1]


def reported(message: str) -> tuple[float, float]:
    """(this stage's, the run's) totals as the stop message gives them."""
    match = re.search(r"spent \$(\d+\.\d{4}) in generate@it1 and \$(\d+\.\d{4}) in run '([^']*)' \(ledger\)", message)
    assert match, message
    return float(match[1]), float(match[2])


def test_a_stage_with_two_call_phases_stops_at_its_role_cap(tmp_path, server):
    # The greedy phase costs $0.0172 and fits; the sampled phase must stop at what is left.
    cap = 0.025
    root = stage_dir(tmp_path / "repo", server, price=PRICE, max_cost_usd=cap)
    message = budget_failure(root, run_generate(root))
    assert f"policy's max_cost_usd ${cap:.4f} for generate@it1 would be passed" in message
    assert message.endswith("Raise max_cost_usd and rerun: the answers so far are cached and cost nothing again.")

    run = str(root.resolve())
    ledger = ledger_of(root)
    total = ledger.total(run, STAGE, "policy")
    assert dearest_call(root) == pytest.approx(SAMPLED_USD)  # the sampled phase was paid for and booked
    assert cap - SAMPLED_USD <= total.cost_usd <= cap + CONCURRENCY * dearest_call(root)
    assert total.calls == sum(answered(server.log_path).values())  # every paid call booked, once
    assert reported(message) == (round(total.cost_usd, 4), round(ledger.total(run).cost_usd, 4))


def test_a_run_cap_holds_across_a_failed_run_and_its_rerun(tmp_path, server):
    cap = 0.01
    root = stage_dir(tmp_path / "repo", server, run_cap=cap, price=PRICE)
    run = str(root.resolve())
    first = budget_failure(root, run_generate(root))
    assert f"the run's max_cost_usd ${cap:.4f} would be passed" in first
    spent = ledger_of(root).total(run)
    assert cap - SAMPLED_USD <= spent.cost_usd <= cap + IN_FLIGHT_USD
    paid = sum(answered(server.log_path).values())
    assert spent.calls == paid

    # Rerun with the same cap: the ledger remembers the failed run, so nothing more is spent.
    again = budget_failure(root, run_generate(root))
    assert f"the run's max_cost_usd ${cap:.4f} would be passed" in again
    assert ledger_of(root).total(run) == spent and sum(answered(server.log_path).values()) == paid
    assert reported(again) == (round(spent.cost_usd, 4), round(spent.cost_usd, 4))

    # Raising the cap completes the stage, paying only for what is missing.
    set_run_cap(root, 1.0)
    done = run_generate(root)
    assert done.returncode == 0, done.stderr
    counts = answered(server.log_path)
    assert len(counts) == 2 * NUM_PROMPTS and max(counts.values()) == 1, "a paid call was repeated"
    total = ledger_of(root).total(run)
    assert total.calls == 2 * NUM_PROMPTS
    assert total.cost_usd == pytest.approx(NUM_PROMPTS * (GREEDY_USD + SAMPLED_USD))


@pytest.mark.parametrize("role_cap, run_cap, stopped_by", [
    (1.0, 0.01, "the run's max_cost_usd $0.0100"),
    (0.01, 1.0, "policy's max_cost_usd $0.0100 for generate@it1"),
])
def test_role_and_run_caps_combine_and_the_smaller_wins(tmp_path, server, role_cap, run_cap, stopped_by):
    root = stage_dir(tmp_path / "repo", server, run_cap=run_cap, price=PRICE, max_cost_usd=role_cap)
    message = budget_failure(root, run_generate(root))
    assert f"budget reached: {stopped_by} would be passed by policy's next call" in message
    spent = ledger_of(root).total(str(root.resolve())).cost_usd
    assert 0.01 - SAMPLED_USD <= spent <= 0.01 + IN_FLIGHT_USD


@pytest.mark.parametrize("policy, run_cap, expected", [
    ({"price": {"input_per_mtok": 10, "outptu_per_mtok": 10}}, None,
     "error: params.yaml `policy.price`: unknown key(s) outptu_per_mtok; expected input_per_mtok and/or "
     "output_per_mtok (US dollars per million tokens)"),
    ({"price": {"input_per_mtok": -10}}, None, "error: params.yaml `policy.price`: input_per_mtok must be >= 0, "
                                               "found -10"),
    ({"price": PRICE, "max_cost_usd": "5 dollars"}, None,
     "error: params.yaml `policy.max_cost_usd`: expected a number of US dollars >= 0 (or null for no cap), "
     "found '5 dollars'"),
    ({"price": PRICE}, -1, "error: params.yaml `max_cost_usd`: must be >= 0 US dollars, found -1"),
])
def test_a_bad_price_or_cap_fails_in_one_line_and_writes_nothing(tmp_path, server, policy, run_cap, expected):
    root = stage_dir(tmp_path / "repo", server, run_cap=run_cap, **policy)
    result = run_generate(root)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines() == [expected]
    assert not (root / CANDIDATES).exists() and not (root / METRICS).exists() and not (root / "runtime").exists()
    assert not cache_dir(root).exists()
    assert not answered(server.log_path)
