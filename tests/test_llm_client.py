"""The remote-call client against a fault-injecting local OpenAI-style server.

The server is real HTTP on 127.0.0.1; it refuses, answers 500, hangs, or
fails a set number of times before answering. The client goes through the
real litellm path, as in the stages.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import time

import pytest

from collabloop.llm_client import Endpoint, LLMClient, Request
from collabloop.response_cache import ResponseCache
from tests.conftest import free_port
from tests.fake_openai import FaultServer


def client(api_base: str, **kw) -> LLMClient:
    kw.setdefault("max_retries", 2)
    kw.setdefault("timeout_s", 5.0)
    return LLMClient(Endpoint("hosted_vllm/test", api_base, temperature=1.0, max_tokens=8),
                     backoff_base_s=0.05, backoff_max_s=0.2, **kw)


def ask(n: int) -> list[Request]:
    return [Request([{"role": "user", "content": f"q{i}"}], salt=str(i)) for i in range(n)]


def test_transient_failures_are_retried():
    with FaultServer("ok", fail_first=2) as server:
        c = client(server.api_base, max_concurrency=1)
        results = c.complete_many(ask(3))
    assert [r.text for r in results] == ["echo: q0", "echo: q1", "echo: q2"]
    assert c.stats["retries"] == 2 and c.stats["failures"] == 0
    assert server.calls == 5


def test_persistent_errors_are_recorded_after_the_retries():
    with FaultServer("error") as server:
        c = client(server.api_base)
        results = c.complete_many(ask(2))
    assert all(r.text is None and r.error for r in results)
    assert c.stats["failures"] == 2
    assert server.calls == 2 * 3  # one try and two retries each


def test_hanging_server_times_out():
    with FaultServer("hang", hang_s=10) as server:
        c = client(server.api_base, timeout_s=1.0, max_retries=1)
        start = time.time()
        results = c.complete_many(ask(2))
        elapsed = time.time() - start
    assert all(r.error and "timeout" in r.error.lower() for r in results), [r.error for r in results]
    assert elapsed < 6  # 2 tries of 1 s each, concurrently, plus a short backoff
    assert server.calls == 4


def test_refused_connection_is_an_error_not_a_crash():
    c = client(f"http://127.0.0.1:{free_port()}/v1", max_retries=1)
    results = c.complete_many(ask(2))
    assert all(r.text is None and r.error for r in results)
    assert c.stats["failures"] == 2


def test_cache_makes_a_rerun_free(tmp_path):
    with FaultServer("ok") as server:
        cache = ResponseCache(tmp_path / "cache.sqlite")
        first = client(server.api_base, cache=cache).complete_many(ask(4))
        calls = server.calls
        rerun = client(server.api_base, cache=ResponseCache(tmp_path / "cache.sqlite"))
        second = rerun.complete_many(ask(4))
    assert calls == 4 and server.calls == 4  # no new call
    assert [r.text for r in second] == [r.text for r in first]
    assert rerun.stats["cache_hits"] == 4 and all(r.cached for r in second)


def _open_cache_at_the_barrier(path, barrier, results):
    barrier.wait()  # every process opens the new file at once, as the ranks of `accelerate launch` do
    try:
        ResponseCache(path).put(f"key{os.getpid()}", "{}")
        results.put("ok")
    except Exception as e:  # noqa: BLE001 - the test reports whatever a process met
        results.put(repr(e))


def test_processes_opening_a_new_cache_together_all_get_it(tmp_path):
    # Entering WAL mode takes an exclusive lock that SQLite does not wait for: before the retry, about
    # 1 in 8 rounds of 8 processes had one of them fail with "database is locked" (a GRPO run's rank 0 did).
    spawn = multiprocessing.get_context("fork")
    for round_ in range(20):
        path, processes = tmp_path / f"cache{round_}.sqlite", 8
        barrier, results = spawn.Barrier(processes), spawn.Queue()
        workers = [spawn.Process(target=_open_cache_at_the_barrier, args=(path, barrier, results))
                   for _ in range(processes)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=120)
        outcomes = [results.get(timeout=10) for _ in workers]
        assert outcomes == ["ok"] * processes, f"round {round_}: {outcomes}"
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT COUNT(*) FROM responses_v1").fetchone()[0] == processes
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_salt_separates_identical_sampled_requests(tmp_path):
    with FaultServer("ok") as server:
        c = client(server.api_base, cache=ResponseCache(tmp_path / "cache.sqlite"))
        same = [Request([{"role": "user", "content": "q"}], salt=s) for s in ("a", "b", "a")]
        c.complete_many(same)
    assert server.calls == 2  # "a" twice is one request; "b" is another


@pytest.mark.parametrize("concurrency", [1, 4])
def test_concurrency_is_bounded(concurrency):
    with FaultServer("hang", hang_s=0.3) as server:
        c = client(server.api_base, max_concurrency=concurrency)
        start = time.time()
        c.complete_many(ask(8))
        elapsed = time.time() - start
    # 8 calls of 0.3 s: 2.4 s one at a time, 0.6 s four at a time.
    assert elapsed >= 8 / concurrency * 0.3 * 0.9


def test_a_budget_message_shows_a_cheap_models_cost_as_it_is():
    """gpt-4o-mini's calls cost a few millionths of a dollar: a stop message saying $0.0000 tells nothing."""
    from collabloop.llm_client import _usd

    assert [_usd(x) for x in (0.12, 0.02, 0.0, 2.1e-05, 0.00025)] == ["0.1200", "0.0200", "0.0000", "2.1e-05",
                                                                       "0.00025"]


# --- rate limits: a window of 1 s instead of 60, so that a few calls reach the limits ------------------------

WINDOW_S = 1.0
# The limiter bounds when calls start; they reach the server a little later, each after its own latency, so
# the arrivals are counted over a window this much shorter.
LATENCY_SLACK_S = 0.25


def most_arrivals_within(arrivals: list[float], window_s: float) -> int:
    """The most arrivals in any window [t, t + window_s) of that length."""
    times = sorted(arrivals)
    return max(sum(1 for u in times[i:] if u < t + window_s) for i, t in enumerate(times))


def warmed(server: FaultServer) -> FaultServer:
    """The server after one unlimited call: litellm's first call in a process is slow (its clients are made),
    which would stretch the gaps between arrivals; the arrivals are counted from here."""
    client(server.api_base).complete_many(ask(1))
    server.arrivals.clear()
    return server


def test_requests_per_minute_hold_over_every_window():
    with FaultServer("ok") as server:
        c = client(warmed(server).api_base, max_requests_per_minute=3, rate_window_s=WINDOW_S)
        start = time.monotonic()
        results = c.complete_many(ask(9))
        elapsed_s = time.monotonic() - start
    assert all(r.error is None for r in results) and len(server.arrivals) == 9
    # Unlimited, the 9 arrive within a few hundredths of a second; limited, at most 3 in any window, so
    # the 7th starts 2 windows after the 1st, and no later than it must.
    assert most_arrivals_within(server.arrivals, WINDOW_S - LATENCY_SLACK_S) <= 3
    assert elapsed_s >= 2 * WINDOW_S * 0.99
    assert max(server.arrivals) - min(server.arrivals) < 2 * WINDOW_S + 1.0
    assert c.stats["rate_limit_waits"] == 6 and c.stats["calls"] == 9  # the first 3 did not wait


def sized(tokens: int, n: int, max_tokens: int = 8) -> list[Request]:
    """n requests of `tokens` estimated tokens each (4 characters a token, plus max_tokens)."""
    return [Request([{"role": "user", "content": "x" * (4 * (tokens - max_tokens))}], salt=f"{tokens}-{i}",
                    max_tokens=max_tokens) for i in range(n)]


def test_tokens_per_minute_hold_over_every_window():
    from collabloop.rate_limits import estimated_tokens

    requests = sized(100, 9)
    assert estimated_tokens(requests[0].messages, 8) == 100
    with FaultServer("ok") as server:
        c = client(warmed(server).api_base, max_tokens_per_minute=300, rate_window_s=WINDOW_S)
        start = time.monotonic()
        results = c.complete_many(requests)
        elapsed_s = time.monotonic() - start
    assert all(r.error is None for r in results)
    # 300 tokens in a window: 3 calls of 100 tokens.
    assert most_arrivals_within(server.arrivals, WINDOW_S - LATENCY_SLACK_S) <= 3
    assert elapsed_s >= 2 * WINDOW_S * 0.99
    assert c.stats["rate_limit_waits"] == 6


def test_a_call_larger_than_the_token_limit_goes_alone():
    """More tokens than the whole limit: it waits for an empty window instead of forever, and the next call
    waits for it to leave the window."""
    window_s = 0.5
    small, big, small_after = *sized(100, 1), *sized(1000, 1), *sized(90, 1)
    with FaultServer("ok") as server:
        c = client(warmed(server).api_base, max_tokens_per_minute=300, rate_window_s=window_s)
        start = time.monotonic()
        results = c.complete_many([small, big, small_after])
        elapsed_s = time.monotonic() - start
    assert all(r.error is None for r in results)
    assert elapsed_s >= 2 * window_s * 0.99
    gaps_s = [b - a for a, b in zip(server.arrivals, server.arrivals[1:])]
    assert len(gaps_s) == 2 and min(gaps_s) > window_s - LATENCY_SLACK_S


def test_concurrency_stays_bounded_under_a_rate_limit():
    hang_s = 0.3
    with FaultServer("hang", hang_s=hang_s) as server:
        c = client(server.api_base, max_concurrency=2, max_requests_per_minute=4, rate_window_s=WINDOW_S)
        start = time.monotonic()
        results = c.complete_many(ask(8))
        elapsed_s = time.monotonic() - start
    assert all(r.error is None for r in results)
    # The server holds each call hang_s: the calls in flight at an arrival are those arrived within hang_s.
    in_flight = [sum(1 for b in server.arrivals if a - hang_s < b <= a) for a in server.arrivals]
    assert max(in_flight) <= 2
    assert most_arrivals_within(server.arrivals, WINDOW_S - LATENCY_SLACK_S) <= 4
    # Both limits together: 2 at 0 s, 2 at 0.3 s, the window full until 1 s, 2 at 1 s, 2 at 1.3 s, done at
    # 1.6 s; each limit alone would take 1.2 s (concurrency) or 1.3 s (rate).
    assert elapsed_s >= (WINDOW_S + 2 * hang_s) * 0.99
    assert c.stats["rate_limit_waits"] >= 2


@pytest.mark.parametrize("requests_per_minute,tokens_per_minute", [(0, 0), (0, 10**6), (1000, 0)])
def test_a_limit_of_0_or_one_not_reached_makes_no_call_wait(requests_per_minute, tokens_per_minute):
    with FaultServer("ok") as server:
        # A minute's window: a call that waited would take a minute.
        c = client(server.api_base, max_requests_per_minute=requests_per_minute,
                   max_tokens_per_minute=tokens_per_minute)
        start = time.monotonic()
        results = c.complete_many(ask(10))
        elapsed_s = time.monotonic() - start
    assert all(r.error is None for r in results)
    assert elapsed_s < 30 and "rate_limit_waits" not in c.stats


def test_rate_limits_hold_across_batches():
    """Each complete_many runs its own event loop; the calls of the last batch still count in the next. In
    both batches calls queue behind a waiting one (an asyncio lock of the first loop would fail in the
    second)."""
    window_s = 0.5
    with FaultServer("ok") as server:
        c = client(warmed(server).api_base, max_requests_per_minute=2, rate_window_s=window_s)
        start = time.monotonic()
        first = c.complete_many(ask(4))
        assert c.stats["rate_limit_waits"] == 2  # the 3rd waited for the window, the 4th behind it
        second = c.complete_many([Request([{"role": "user", "content": f"again {i}"}]) for i in range(2)])
        elapsed_s = time.monotonic() - start
    assert all(r.error is None for r in first + second) and len(server.arrivals) == 6
    assert most_arrivals_within(server.arrivals, window_s - LATENCY_SLACK_S) <= 2
    # A limiter new to the second batch would have let it start at once, at 1 window.
    assert elapsed_s >= 2 * window_s * 0.99
    assert c.stats["rate_limit_waits"] == 4
