"""The `honing` command: cache stats/prune, spend and serve."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from importlib.metadata import entry_points

import pytest

from honing.calls.backends.base import ChatRequest, ChatResult, Completion
from honing.calls.backends.openai_backend import OpenAIBackend
from honing.calls.cache import RequestCache
from honing.calls.ledger import Account, SpendLedger
from honing.cli import main


def fill(path, models: dict[str, int]) -> None:
    cache = RequestCache(path)
    for model, count in models.items():
        for i in range(count):
            key = ChatRequest(messages=({"role": "user", "content": f"{model} {i}"},)).cache_key(model)
            cache.put(key, ChatResult(completions=(Completion("a", "stop"),), prompt_tokens=1,
                                      completion_tokens=1, model=model), model=model)


def test_console_script_is_declared():
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get("honing") == "honing.cli:main"


def test_cache_stats_reads_the_default_location(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HONING_CACHE_DIR", str(tmp_path))
    assert main(["cache", "stats"]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'requests.sqlite'}: no cache yet\n"
    fill(tmp_path / "requests.sqlite", {"model-a": 3, "model-b": 1})
    assert main(["cache", "stats"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{tmp_path / 'requests.sqlite'}: 4 answers, ")
    assert out[2:] == ["         3  model-a", "         1  model-b"]
    assert main(["cache", "stats", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["models"] == {"model-a": 3, "model-b": 1}


def test_cache_prune(tmp_path, capsys):
    path = tmp_path / "c.sqlite"
    fill(path, {"model-a": 3, "model-b": 2})
    assert main(["cache", "--path", str(path), "prune", "--model", "model-a"]) == 0
    assert capsys.readouterr().out == f"{path}: deleted 3 answers\n"
    assert main(["cache", "--path", str(path), "prune", "--older-than-days", "1"]) == 0
    assert capsys.readouterr().out == f"{path}: deleted 0 answers\n"
    assert main(["cache", "--path", str(path), "prune"]) == 2
    assert "give --older-than-days N and/or --model M" in capsys.readouterr().err
    assert RequestCache(path).stats()["models"] == {"model-b": 2}


def test_spend_per_run_and_stage_from_the_ledger(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HONING_CACHE_DIR", str(tmp_path))
    assert main(["spend"]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'spend.sqlite'}: no spend recorded\n"
    ledger = SpendLedger(tmp_path / "spend.sqlite")
    for i in range(3):
        ledger.record(Account("/work/proj", "generate@it1", "policy"), "gpt-x", f"g{i}", 1000, 200, 0.01)
    ledger.record(Account("/work/proj", "refine@it1", "critic"), "gpt-y", "c0", 2000, 500, 0.125)
    ledger.record(Account("march", "generate@it1", "policy"), "gpt-x", "g0", 1000, 200, 0.01)
    assert main(["spend"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "run /work/proj: $0.1550 on 4 calls (5,000 prompt + 1,100 completion tokens)",
        "     $0.0300        3 calls  generate@it1  policy  gpt-x",
        "     $0.1250        1 calls  refine@it1  critic  gpt-y",
        "run march: $0.0100 on 1 calls (1,000 prompt + 200 completion tokens)",
        "     $0.0100        1 calls  generate@it1  policy  gpt-x",
    ]
    assert main(["spend", "--run", "march", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["path"] == str(tmp_path / "spend.sqlite")
    [run] = report["runs"]
    assert {k: run[k] for k in ("run", "calls", "prompt_tokens", "completion_tokens", "cost_usd")} == {
        "run": "march", "calls": 1, "prompt_tokens": 1000, "completion_tokens": 200, "cost_usd": 0.01}
    assert [(s["stage"], s["role"], s["model"], s["calls"]) for s in run["stages"]] == [
        ("generate@it1", "policy", "gpt-x", 1)]
    assert main(["spend", "--path", str(tmp_path / "spend.sqlite"), "--run", "nowhere"]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'spend.sqlite'}: no spend recorded for run 'nowhere'\n"


def test_serve_rejects_an_unknown_fault(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["serve", "--fault", "meteor=0.5"])
    assert caught.value.code == 2
    assert "expected KIND=RATE with KIND one of rate_limit," in capsys.readouterr().err


def test_honing_serve_answers_with_faults_and_stops_on_interrupt(tmp_path):
    log = tmp_path / "log.jsonl"
    server = subprocess.Popen(
        [sys.executable, "-m", "honing.cli", "serve", "--echo", "--fault", "rate_limit=0.3",
         "--fault", "server_error=0.2", "--log", str(log)],
        stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        assert line.startswith("honing serve: http://127.0.0.1:") and line.endswith(" model=honing-echo\n")
        url = line.split()[2]
        backend = OpenAIBackend("honing-echo", base_url=url, max_retries=20, initial_backoff_s=0.01,
                                max_backoff_s=0.05)
        results = backend.generate([ChatRequest(messages=({"role": "user", "content": f"q{i}"},))
                                    for i in range(30)])
        assert [r.text for r in results] == [f"echo: q{i}" for i in range(30)]
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=10) == 0
    outcomes = Counter(json.loads(entry)["outcome"] for entry in log.read_text().splitlines())
    assert outcomes["ok"] == 30 and outcomes["rate_limit"] > 0 and outcomes["server_error"] > 0
    assert backend.retry_counts["rate_limit"] == outcomes["rate_limit"]


def test_results_prints_and_writes_the_table(tmp_path, capsys):
    from honing.results import BEGIN, END

    report = tmp_path / "report.json"
    report.write_text(json.dumps({
        "checkpoints": ["base"], "accuracy_per_round": {"base": [0.5, 0.75]}, "fixed": {"base": 3},
        "broken": {"base": 1}, "critic_recall_wrong": {"base": 0.9}, "critic_false_alarm_rate": {"base": 0.1}}))
    assert main(["results", "--report", str(report)]) == 0
    table = capsys.readouterr().out.strip()
    assert table.splitlines()[-1] == "| base | 0.500 | 0.750 | 3 / 1 | 0.90 | 0.10 | – |"
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{BEGIN}\nold\n{END}\n")
    assert main(["results", "--report", str(report), "--update", str(readme)]) == 0
    assert readme.read_text() == f"# x\n{BEGIN}\n{table}\n{END}\n"
    # a named block (a preset's measured run) beside the results table, which stays as it is
    opening = f"<!-- preset: written by `honing results --report {report} --update {readme} --block preset` -->"
    readme.write_text(f"# x\n{BEGIN}\n{table}\n{END}\n{opening}\nold\n<!-- /preset -->\n")
    assert main(["results", "--report", str(report), "--update", str(readme), "--block", "preset"]) == 0
    assert readme.read_text() == f"# x\n{BEGIN}\n{table}\n{END}\n{opening}\n{table}\n<!-- /preset -->\n"
    assert main(["results", "--report", str(tmp_path / "missing.json")]) == 1
    assert "missing.json: no such file" in capsys.readouterr().err
