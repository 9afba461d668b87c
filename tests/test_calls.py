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
from honing.calls.ledger import Account, CostSettingError, SpendLedger, SpendScope
from honing.calls.roles import Role
from honing.calls.runner import Budget, BudgetExceeded, CallStats, Pricing, run_requests
from honing.calls.server import ChatServer
from honing.errors import HoningError


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
    assert Pricing.from_params({"input_per_mtok": 1}) == Pricing(1.0, 0.0)
    assert Pricing.from_params(None) == Pricing(0.0, 0.0)


@pytest.mark.parametrize("block, message", [
    ({"input": 1}, "params.yaml `policy.price`: unknown key(s) input; expected input_per_mtok and/or "
                   "output_per_mtok (US dollars per million tokens)"),
    ({"input_per_mtok": "0.15"}, "params.yaml `policy.price`: input_per_mtok must be a number of US dollars "
                                 "per million tokens, found '0.15'"),
    ({"output_per_mtok": True}, "params.yaml `policy.price`: output_per_mtok must be a number of US dollars "
                                "per million tokens, found True"),
    ({"output_per_mtok": -0.6}, "params.yaml `policy.price`: output_per_mtok must be >= 0, found -0.6"),
    (0.15, "params.yaml `policy.price`: expected a mapping of input_per_mtok and/or output_per_mtok "
           "(US dollars per million tokens), found 0.15"),
])
def test_a_bad_price_block_is_one_line_naming_the_role(block, message):
    with pytest.raises(CostSettingError) as caught:
        Role.from_params("policy", {"backend": "openai", "model": "m", "price": block})
    assert str(caught.value) == message
    assert isinstance(caught.value, HoningError) and isinstance(caught.value, ValueError)


@pytest.mark.parametrize("cap, message", [
    ("20", "params.yaml `refine.critic.max_cost_usd`: expected a number of US dollars >= 0 (or null for no cap), "
           "found '20'"),
    (-1, "params.yaml `refine.critic.max_cost_usd`: must be >= 0 US dollars, found -1"),
    (float("nan"), "params.yaml `refine.critic.max_cost_usd`: expected a number of US dollars >= 0 (or null for "
                   "no cap), found nan"),
])
def test_a_bad_max_cost_usd_is_one_line_naming_the_role(cap, message):
    spec = {"backend": "openai", "model": "m", "max_cost_usd": cap}
    with pytest.raises(CostSettingError) as caught:
        Role.from_params("critic", spec, params_path="refine.critic")
    assert str(caught.value) == message


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


DOLLAR_AND_A_HALF = Pricing(input_per_mtok=100_000, output_per_mtok=100_000)  # ScriptedBackend: $1.50 a call


def test_one_budget_serves_every_call_so_a_second_phase_stops_at_the_cap(tmp_path):
    backend, cache = ScriptedBackend(), RequestCache(tmp_path / "c.sqlite")
    budget = Budget(max_cost_usd=10.0)
    run_requests(backend, [ask(f"g{i}") for i in range(4)], cache=cache, pricing=DOLLAR_AND_A_HALF, budget=budget)
    assert budget.spent_usd == pytest.approx(6.0)
    # The second phase has $4 left, not $10: two more calls, then the next would pass the cap.
    with pytest.raises(BudgetExceeded) as caught:
        run_requests(backend, [ask(f"s{i}") for i in range(10)], cache=cache, pricing=DOLLAR_AND_A_HALF,
                     budget=budget)
    assert str(caught.value) == (
        "budget reached: spent $9.0000 of max_cost_usd $10.0000 on 6 new calls; 8 requests remain "
        "unanswered. Raise max_cost_usd and rerun: the answers so far are cached and cost nothing again.")
    assert cache.stats()["rows"] == 6 and budget.calls == 6
    # A third phase is stopped before it sends anything: $1 left, $1.50 a call so far.
    with pytest.raises(BudgetExceeded, match=r"spent \$9\.0000 of max_cost_usd \$10\.0000 on 6 new calls; "
                                             r"3 requests remain"):
        run_requests(backend, [ask(f"t{i}") for i in range(3)], cache=cache, pricing=DOLLAR_AND_A_HALF,
                     budget=budget)
    assert len(backend.sent) == 2


def ledger_figures(message: str) -> tuple[float, float, float, int]:
    """(stage total, run total, spent in this attempt, its calls) as a stop message reports them."""
    match = re.search(r"spent \$(\d+\.\d{4}) in \S+ and \$(\d+\.\d{4}) in run '[^']*' \(ledger\), "
                      r"\$(\d+\.\d{4}) of it on (\d+) new calls in this attempt", message)
    assert match, message
    return float(match[1]), float(match[2]), float(match[3]), int(match[4])


def test_every_paid_answer_is_booked_once_and_cached_or_free_answers_never(tmp_path):
    ledger = SpendLedger(tmp_path / "spend.sqlite")
    cache = RequestCache(tmp_path / "c.sqlite")
    budget = SpendScope("run-a", "generate@it1", ledger=ledger).budget("policy", None)
    requests = [ask("a"), ask("b"), ask("a")]
    run_requests(ScriptedBackend(), requests, cache=cache, pricing=DOLLAR_AND_A_HALF, budget=budget)
    run_requests(ScriptedBackend(), requests, cache=cache, pricing=DOLLAR_AND_A_HALF, budget=budget)  # cached
    assert ledger.total("run-a") == (pytest.approx(3.0), 2)
    [row] = ledger.summary()
    assert (row["stage"], row["role"], row["model"], row["prompt_tokens"], row["completion_tokens"]) == (
        "generate@it1", "policy", "scripted:upper", 20, 10)
    free = SpendScope("run-a", "generate@it1", ledger=ledger).budget("policy", 0.0)
    run_requests(ScriptedBackend(), [ask("c")], cache=cache, budget=free)  # a local model: price zero
    assert ledger.total("run-a").calls == 2


def test_earlier_attempts_in_the_ledger_count_against_the_role_cap(tmp_path):
    ledger = SpendLedger(tmp_path / "spend.sqlite")
    scope = SpendScope("run-a", "generate@it1", ledger=ledger)
    requests = [ask(f"q{i}") for i in range(10)]
    with pytest.raises(BudgetExceeded):
        run_requests(ScriptedBackend(), requests, cache=None, pricing=DOLLAR_AND_A_HALF,
                     budget=scope.budget("policy", 10.0))
    assert ledger.total("run-a") == (pytest.approx(9.0), 6)
    # A rerun of the failed stage with the same cap sends nothing ($1 left, $1.50 a call).
    again = ScriptedBackend()
    with pytest.raises(BudgetExceeded) as caught:
        run_requests(again, requests, cache=None, pricing=DOLLAR_AND_A_HALF, budget=scope.budget("policy", 10.0))
    assert again.sent == [] and ledger_figures(str(caught.value)) == (9.0, 9.0, 0.0, 0)
    # Another stage, or another run, has a cap of its own.
    other = ScriptedBackend()
    run_requests(other, requests[:4], cache=None, pricing=DOLLAR_AND_A_HALF,
                 budget=SpendScope("run-a", "generate@it2", ledger=ledger).budget("policy", 10.0))
    run_requests(other, requests[:4], cache=None, pricing=DOLLAR_AND_A_HALF,
                 budget=SpendScope("run-b", "generate@it1", ledger=ledger).budget("policy", 10.0))
    assert len(other.sent) == 2


@pytest.mark.parametrize("role_cap, run_cap, stopped_by, paid", [
    (100.0, 6.0, "the run's max_cost_usd $6.0000", 2),  # $3 spent earlier in the run: $3 left, two calls
    (4.5, 100.0, "policy's max_cost_usd $4.5000 for refine@it1", 3),  # none yet in this stage: three calls
    (4.5, 6.0, "the run's max_cost_usd $6.0000", 2),  # both apply: the smaller remainder wins
    (3.0, 7.5, "policy's max_cost_usd $3.0000 for refine@it1", 2),
])
def test_role_and_run_caps_combine_and_the_smaller_remainder_wins(tmp_path, role_cap, run_cap, stopped_by, paid):
    ledger = SpendLedger(tmp_path / "spend.sqlite")
    ledger.record(Account("run-a", "generate@it1", "policy"), "m", "k1", 10, 5, 1.5)  # earlier stages of the run
    ledger.record(Account("run-a", "generate@it1", "policy"), "m", "k2", 10, 5, 1.5)
    ledger.record(Account("run-b", "refine@it1", "policy"), "m", "k3", 10, 5, 100.0)  # another run: not counted
    backend = ScriptedBackend()
    budget = SpendScope("run-a", "refine@it1", run_max_cost_usd=run_cap, ledger=ledger).budget("policy", role_cap)
    with pytest.raises(BudgetExceeded) as caught:
        run_requests(backend, [ask(f"q{i}") for i in range(10)], cache=None, pricing=DOLLAR_AND_A_HALF,
                     budget=budget)
    message = str(caught.value)
    assert message.startswith(f"budget reached: {stopped_by} would be passed by policy's next call; ")
    # The message's figures are the ledger's.
    stage, run, spent, calls = ledger_figures(message)
    assert stage == round(ledger.total("run-a", "refine@it1").cost_usd, 4) == pytest.approx(paid * 1.5)
    assert run == round(ledger.total("run-a").cost_usd, 4) == pytest.approx(3.0 + paid * 1.5)
    assert (spent, calls) == (pytest.approx(paid * 1.5), paid)
    assert message.endswith(f"{10 - paid} requests remain unanswered. Raise max_cost_usd and rerun: the answers "
                            "so far are cached and cost nothing again.")


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


def test_over_http_the_stop_message_reports_the_ledger_after_answers_in_flight(tmp_path):
    ledger, cache = SpendLedger(tmp_path / "spend.sqlite"), RequestCache(tmp_path / "c.sqlite")
    pricing = Pricing(input_per_mtok=10_000, output_per_mtok=10_000)  # 5 tokens: $0.05 a call
    scope = SpendScope("run-a", "generate@it1", ledger=ledger)
    with ChatServer(latency_ms=10) as server:
        backend = OpenAIBackend(server.model, base_url=server.url, max_concurrency=8)
        with pytest.raises(BudgetExceeded) as caught:
            run_requests(backend, [ask(f"question {i}") for i in range(100)], cache=cache, pricing=pricing,
                         budget=scope.budget("policy", 1.0))
        paid = sum(answered(server).values())
    stage, run, spent, calls = ledger_figures(str(caught.value))
    total = ledger.total("run-a")
    assert calls == paid == total.calls == cache.stats()["rows"]  # answers in flight were booked and cached
    assert stage == run == spent == round(total.cost_usd, 4) == pytest.approx(paid * 0.05)
    assert 1.0 - 0.05 <= total.cost_usd <= 1.0 + 8 * 0.05  # at most the calls in flight pass the cap


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
