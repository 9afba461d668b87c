"""Throughput of honing's OpenAI path against a server with fixed latency, beside its peers.

    python bench/bench_openai.py [--requests 5000] [--concurrency 64] [--latency-ms 150]

Starts `honing serve --echo --latency-ms L` in its own process, then sends N distinct
requests (no cache hits: a fresh temporary cache) through `run_requests` +
`OpenAIBackend` at the given concurrency. With every reply taking L, the best any
client can do is concurrency / L requests per second; the ratio to that is the
figure of merit (goal: >= 0.9). The same workload then goes through
bespokelabs-curator and distilabel, run with the python of `.venv-peers` (they pin
other openai versions; see bench/peers/). Each system also runs a short warm-up of
`concurrency` requests first, so its fixed start-up cost can be told apart from its
steady rate. A peer that cannot run is reported with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from honing.calls.backends.base import ChatRequest, SamplingParams
from honing.calls.backends.openai_backend import OpenAIBackend
from honing.calls.cache import RequestCache
from honing.calls.runner import run_requests

ROOT = Path(__file__).resolve().parent.parent
PEERS = {"curator": ROOT / "bench/peers/curator_peer.py", "distilabel": ROOT / "bench/peers/distilabel_peer.py"}


def start_server(latency_ms: float) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen([sys.executable, "-m", "honing.cli", "serve", "--echo",
                               "--latency-ms", str(latency_ms)], stdout=subprocess.PIPE, text=True)
    line = server.stdout.readline()
    if not line.startswith("honing serve: "):
        server.kill()
        sys.exit(f"bench: the server did not start (said {line!r})")
    return server, line.split()[2]


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def run_honing(url: str, count: int, concurrency: int) -> dict:
    stamp = time.time_ns()  # distinct prompts every run: nothing can come from a cache
    requests = [ChatRequest(messages=({"role": "user", "content": f"honing {stamp} question {i}"},),
                            params=SamplingParams(max_tokens=16)) for i in range(count)]
    backend = OpenAIBackend("honing-echo", base_url=url, max_concurrency=concurrency)
    with tempfile.TemporaryDirectory(prefix="honing-bench-") as folder:
        started = time.monotonic()
        results, stats = run_requests(backend, requests, cache=RequestCache(Path(folder) / "requests.sqlite"),
                                      desc="honing")
        seconds = time.monotonic() - started
    assert stats.cache_hits == 0 and len(results) == count, "the bench must not hit a cache"
    answered = sum(1 for r, q in zip(results, requests) if r.text == "echo: " + q.messages[0]["content"])
    return {"system": "honing", "requests": count, "seconds": seconds, "answered": answered}


def run_peer(name: str, python: Path, url: str, count: int, concurrency: int) -> dict:
    if not python.exists():
        return {"system": name, "error": f"no peers venv at {python.parent.parent} "
                                         "(see the module docstring to create it)"}
    command = [str(python), str(PEERS[name]), "--url", url, "--requests", str(count),
               "--concurrency", str(concurrency)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return {"system": name, "error": f"exit {done.returncode}: {tail[:300]}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=150.0)
    parser.add_argument("--peers-python", type=Path, default=ROOT / ".venv-peers/bin/python")
    parser.add_argument("--systems", default="honing,curator,distilabel")
    args = parser.parse_args()

    ideal = args.concurrency / (args.latency_ms / 1000)
    server, url = start_server(args.latency_ms)
    print(f"server {url}: {args.latency_ms:g} ms a reply; ideal at concurrency {args.concurrency}: "
          f"{ideal:.0f} requests/s; {args.requests} requests per system; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    try:
        for system in args.systems.split(","):
            def once(count: int) -> dict:
                # Client CPU per request says whether a client is bound by its own overhead.
                who = resource.RUSAGE_SELF if system == "honing" else resource.RUSAGE_CHILDREN
                before = cpu_seconds(who)
                if system == "honing":
                    row = run_honing(url, count, args.concurrency)
                else:
                    row = run_peer(system, args.peers_python, url, count, args.concurrency)
                row["client_cpu_ms_per_request"] = round((cpu_seconds(who) - before) / count * 1000, 2)
                return row

            warmup = once(args.concurrency)
            full = warmup if "error" in warmup else once(args.requests)
            rows.append((full, warmup))
            print(f"  {system}: {json.dumps(full)}", flush=True)
    finally:
        server.terminate()
        server.wait()

    print(f"\n{'system':<11} {'answered':>9} {'seconds':>8} {'req/s':>7} {'ratio':>6}  "
          f"{'steady req/s':>12} {'steady ratio':>12} {'client CPU ms/req':>17}")
    for full, warmup in rows:
        if "error" in full:
            print(f"{full['system']:<11} could not run: {full['error']}")
            continue
        rate = full["requests"] / full["seconds"]
        # Rate once started: the warm-up's time (start-up + one wave) taken off the full run.
        extra = full["requests"] - warmup["requests"]
        steady = extra / (full["seconds"] - warmup["seconds"]) if full["seconds"] > warmup["seconds"] else rate
        print(f"{full['system']:<11} {full['answered']:>9} {full['seconds']:>8.2f} {rate:>7.0f} {rate / ideal:>6.2f}  "
              f"{steady:>12.0f} {steady / ideal:>12.2f} {full['client_cpu_ms_per_request']:>17.2f}")


if __name__ == "__main__":
    main()
