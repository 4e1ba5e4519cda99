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

from collabloop.llm_client import Endpoint, LLMClient, Request, ResponseCache
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
