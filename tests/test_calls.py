"""run_requests: cache first, each missing request sent once, cost, budget, kill and resume."""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter

import pytest

from honing.calls.backends.base import BackendError, ChatRequest, ChatResult, Completion
from honing.calls.backends.openai_backend import OpenAIBackend
from honing.calls.cache import RequestCache
from honing.calls.runner import Budget, BudgetExceeded, CallStats, Pricing, run_requests
from honing.calls.server import ChatServer


def ask(text: str) -> ChatRequest:
    return ChatRequest(messages=({"role": "user", "content": text},))


class ScriptedBackend:
    """A real Backend with scripted answers (the prompt upper-cased) that records what it was sent."""

    kind, model_id = "scripted", "scripted:upper"

    def __init__(self, answer_only: int | None = None, report: bool = True):
        self.sent: list[list[str]] = []
        self.retry_counts = {"rate_limit": 0}
        self.answer_only, self.report = answer_only, report

    def generate(self, requests, on_result=None):
        self.sent.append([r.messages[-1]["content"] for r in requests])
        results = []
        for i, request in enumerate(requests[: self.answer_only]):
            result = ChatResult(completions=(Completion(request.messages[-1]["content"].upper(), "stop"),),
                                prompt_tokens=10, completion_tokens=5, model=self.model_id)
            self.retry_counts["rate_limit"] += 1  # as if each needed one retry
            if on_result is not None and self.report:
                on_result(i, result)
            results.append(result)
        return results

    def close(self):
        pass


def test_results_in_order_duplicates_sent_once_then_all_cached(tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    backend = ScriptedBackend()
    requests = [ask(t) for t in ["a", "b", "a", "c", "b"]]
    results, stats = run_requests(backend, requests, cache=cache, pricing=Pricing(1.0, 2.0))
    assert [r.text for r in results] == ["A", "B", "A", "C", "B"]
    assert backend.sent == [["a", "b", "c"]]
    assert (stats.requests, stats.cache_hits, stats.cache_misses) == (5, 0, 3)
    assert (stats.prompt_tokens, stats.completion_tokens) == (30, 15)
    assert stats.cost_usd == pytest.approx((30 * 1.0 + 15 * 2.0) / 1e6)
    assert stats.retries == {"rate_limit": 3}
    assert stats.cache_bytes_written == sum(len(r.to_json().encode()) for r in results[:2] + results[3:4])

    again, stats2 = run_requests(backend, requests, cache=cache, pricing=Pricing(1.0, 2.0))
    assert backend.sent == [["a", "b", "c"]]  # nothing new sent
    assert [r.text for r in again] == [r.text for r in results] and all(r.cached for r in again)
    assert (stats2.cache_hits, stats2.cache_misses, stats2.cost_usd, stats2.retries) == (5, 0, 0.0, {})


def test_without_a_cache_everything_is_sent_each_time():
    backend = ScriptedBackend()
    run_requests(backend, [ask("x"), ask("x")], cache=None)
    run_requests(backend, [ask("x")], cache=None)
    assert backend.sent == [["x"], ["x"]]


def test_data_figures_and_runtime_figures_are_apart_with_retries_by_kind():
    stats = CallStats(requests=3, cache_hits=1, cache_misses=2, cost_usd=0.12345678,
                      retries={"timeout": 2, "rate_limit": 1}, seconds=1.23456,
                      data_prompt_tokens=30, data_completion_tokens=15, data_cost_usd=0.2)
    assert stats.to_metrics() == {"requests": 3, "prompt_tokens": 30, "completion_tokens": 15, "cost_usd": 0.2}
    assert stats.to_runtime() == {
        "cache_hits": 1, "cache_misses": 2, "cache_bytes_written": 0, "new_prompt_tokens": 0,
        "new_completion_tokens": 0, "spent_usd": 0.123457, "seconds": 1.235, "retries": 3,
        "retries_rate_limit": 1, "retries_timeout": 2}


def test_data_figures_count_cached_answers_too(tmp_path):
    backend = ScriptedBackend()
    cache = RequestCache(tmp_path / "c.sqlite")
    pricing = Pricing(input_per_mtok=1_000_000, output_per_mtok=0)  # $1 per prompt token
    _, first = run_requests(backend, [ask("a"), ask("b")], cache=cache, pricing=pricing)
    _, again = run_requests(backend, [ask("a"), ask("b")], cache=cache, pricing=pricing)
    assert (first.cost_usd, again.cost_usd) == (20.0, 0.0)  # spent: only new calls cost
    assert first.data_cost_usd == again.data_cost_usd == 20.0  # the data's cost is the same
    assert first.data_prompt_tokens == again.data_prompt_tokens == 20


def test_pricing_from_a_params_block():
    assert Pricing.from_params({"input_per_mtok": 0.15, "output_per_mtok": 0.6}) == Pricing(0.15, 0.6)
    assert Pricing.from_params(None) == Pricing(0.0, 0.0)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['input'\]"):
        Pricing.from_params({"input": 1})


def test_a_backend_that_skips_requests_is_an_error(tmp_path):
    with pytest.raises(BackendError, match="returned without answering 2 of 3 requests"):
        run_requests(ScriptedBackend(answer_only=1), [ask("a"), ask("b"), ask("c")], cache=None)


def test_answers_returned_without_a_callback_are_cached_too(tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    results, stats = run_requests(ScriptedBackend(report=False), [ask("a"), ask("b")], cache=cache)
    assert [r.text for r in results] == ["A", "B"] and stats.completion_tokens == 10
    assert cache.stats()["rows"] == 2


def test_budget_stops_before_the_call_that_would_pass_it(tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    backend = ScriptedBackend()
    pricing = Pricing(input_per_mtok=100_000, output_per_mtok=100_000)  # $1.50 a call
    requests = [ask(f"q{i}") for i in range(10)]
    with pytest.raises(BudgetExceeded) as caught:
        run_requests(backend, requests, cache=cache, pricing=pricing, budget=Budget(max_cost_usd=10.0))
    assert str(caught.value) == (
        "budget reached: spent $9.0000 of max_cost_usd $10.0000 on 6 new calls; 4 requests remain "
        "unanswered. Raise max_cost_usd and rerun: the answers so far are cached and cost nothing again.")
    assert isinstance(caught.value, BackendError)
    results, stats = run_requests(backend, requests, cache=cache, pricing=pricing, budget=Budget(100.0))
    assert backend.sent[1] == ["q6", "q7", "q8", "q9"]
    assert [r.text for r in results] == [f"Q{i}" for i in range(10)]
    assert stats.cost_usd == pytest.approx(6.0) and stats.cache_hits == 6


def test_a_zero_budget_sends_nothing_for_a_paid_model_and_never_stops_a_free_one():
    backend = ScriptedBackend()
    with pytest.raises(BudgetExceeded, match=r"spent \$0\.0000 of max_cost_usd \$0\.0000 on 0 new calls; "
                                             r"2 requests remain unanswered"):
        run_requests(backend, [ask("a"), ask("b")], cache=None, pricing=Pricing(1.0, 1.0), budget=Budget(0.0))
    assert backend.sent == []
    run_requests(backend, [ask("a"), ask("b")], cache=None, budget=Budget(0.0))  # local: price zero
    assert backend.sent == [["a", "b"]]


# ---- against the real server ----------------------------------------------------------


def answered(server: ChatServer) -> Counter:
    """How many times the server answered each prompt (successful replies only)."""
    return Counter(entry["prompt"] for entry in server.log if entry["outcome"] == "ok")


def test_budget_over_http_then_rerun_pays_no_call_twice(tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    pricing = Pricing(input_per_mtok=10_000, output_per_mtok=10_000)  # 5 tokens: $0.05 a call
    requests = [ask(f"question {i}") for i in range(100)]
    with ChatServer(latency_ms=10) as server:
        backend = OpenAIBackend(server.model, base_url=server.url, max_concurrency=8)
        with pytest.raises(BudgetExceeded) as caught:
            run_requests(backend, requests, cache=cache, pricing=pricing, budget=Budget(1.0))
        match = re.fullmatch(r"budget reached: spent \$(\d+\.\d{4}) of max_cost_usd \$1\.0000 on (\d+) new calls; "
                             r"(\d+) requests remain unanswered\. Raise max_cost_usd and rerun: the answers so "
                             r"far are cached and cost nothing again\.", str(caught.value))
        assert match, str(caught.value)
        spent, paid, remain = float(match[1]), int(match[2]), int(match[3])
        # Calls in flight at the stop finish (they are paid) and are cached too.
        assert 19 <= paid <= 19 + 8 and paid + remain == 100
        assert spent == pytest.approx(paid * 0.05)
        assert sum(answered(server).values()) == paid == cache.stats()["rows"]

        results, stats = run_requests(backend, requests, cache=cache, pricing=pricing, budget=Budget(10.0))
        assert [r.text for r in results] == [f"echo: question {i}" for i in range(100)]
        assert stats.cache_hits == paid and stats.cost_usd == pytest.approx(remain * 0.05)
        counts = answered(server)
        assert len(counts) == 100 and max(counts.values()) == 1, "a paid call was repeated"


def test_growing_the_pool_sends_only_new_prompts_and_reordering_sends_none(tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    pool = [ask(f"prompt {i}") for i in range(200)]
    with ChatServer() as server:
        backend = OpenAIBackend(server.model, base_url=server.url)
        run_requests(backend, pool, cache=cache)
        first = set(answered(server))
        grown = pool + [ask("prompt 200"), ask("prompt 201")]  # +1 %
        results, stats = run_requests(backend, grown, cache=cache)
        counts = answered(server)
        assert sum(counts.values()) == 202 and len(set(counts) - first) == 2
        assert (stats.cache_hits, stats.cache_misses) == (200, 2)

        shuffled = grown[:]
        random.Random(0).shuffle(shuffled)
        again, stats = run_requests(backend, shuffled, cache=cache)
        assert sum(answered(server).values()) == 202 and stats.cache_misses == 0
        assert [r.text for r in again] == [f"echo: {r.messages[0]['content']}" for r in shuffled]


DRIVER = textwrap.dedent("""
    import json, sys
    from honing.calls.backends.base import ChatRequest
    from honing.calls.backends.openai_backend import OpenAIBackend
    from honing.calls.cache import RequestCache
    from honing.calls.runner import run_requests

    url, cache_path, out_path, count = sys.argv[1:5]
    requests = [ChatRequest(messages=({"role": "user", "content": f"item {i}"},)) for i in range(int(count))]
    backend = OpenAIBackend("honing-echo", base_url=url, max_concurrency=16)
    results, stats = run_requests(backend, requests, cache=RequestCache(cache_path))
    with open(out_path, "w") as f:
        json.dump([r.text for r in results], f)
""")


def test_sigkill_half_way_then_rerun_repeats_only_calls_in_flight(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    cache_path, out_path, count, concurrency = tmp_path / "c.sqlite", tmp_path / "out.json", 400, 16
    with ChatServer(latency_ms=20) as server:
        command = [sys.executable, str(driver), server.url, str(cache_path), str(out_path), str(count)]
        process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while sum(answered(server).values()) < count // 2:
            assert process.poll() is None, "the driver ended before it could be killed"
            assert time.monotonic() < deadline, "the driver made no progress"
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
        process.wait()
        time.sleep(0.1)
        while server.inflight:  # replies already under way when the client died
            time.sleep(0.005)
        answered_before_kill = sum(answered(server).values())
        assert answered_before_kill < count and not out_path.exists()
        cached_at_kill = RequestCache(cache_path).stats()["rows"]
        # At most the calls in flight were answered but not stored.
        assert answered_before_kill - concurrency <= cached_at_kill <= answered_before_kill

        subprocess.run(command, check=True, stderr=subprocess.DEVNULL, timeout=60)
        counts = answered(server)
        assert len(counts) == count
        assert sum(counts.values()) - answered_before_kill == count - cached_at_kill  # the rerun sent only misses
        repeated = [prompt for prompt, n in counts.items() if n > 1]
        assert len(repeated) == answered_before_kill - cached_at_kill <= concurrency
        assert max(counts.values()) <= 2

    with ChatServer() as fresh:  # an uninterrupted run, fresh cache, same replies
        backend = OpenAIBackend("honing-echo", base_url=fresh.url)
        uninterrupted, _ = run_requests(backend, [ask(f"item {i}") for i in range(count)],
                                        cache=RequestCache(tmp_path / "fresh.sqlite"))
    assert json.loads(out_path.read_text()) == [r.text for r in uninterrupted]
