"""The run's budget (max_cost_usd) against a priced fake OpenAI-compatible server.

The server is real HTTP on 127.0.0.1 and answers every chat completion with a grade and a `usage` block;
its model is registered in litellm with a price per token, so the client's costs are litellm's own. The
annotate stage (interactivity, a judge call per future) runs in this process.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # litellm's offline price table: no network

from annotate_data.annotate import main as annotate_main  # noqa: E402
from annotate_data.scoring import run as annotate  # noqa: E402
from collabloop.cli import run_main  # noqa: E402
from collabloop.llm_client import BudgetExceeded, Endpoint, LLMClient, Request  # noqa: E402
from collabloop.response_cache import ResponseCache  # noqa: E402
from collabloop.stage_configs import AnnotateConfig  # noqa: E402
from tests.conftest import MODEL, math_task, write_jsonl  # noqa: E402
from tests.fake_openai import FaultServer  # noqa: E402
from tests.test_faults import assert_same_as_uninterrupted, scored_inputs  # noqa: E402

PRICED = "collabloop-budget-test"
PROMPT_TOKENS, COMPLETION_TOKENS = 100, 10
INPUT_PRICE, OUTPUT_PRICE = 1e-4, 1e-3
CALL_COST = PROMPT_TOKENS * INPUT_PRICE + COMPLETION_TOKENS * OUTPUT_PRICE  # $0.02


pytestmark = pytest.mark.slow  # a stage end to end against a server: not in the quick tier


@pytest.fixture(scope="module", autouse=True)
def priced_model():
    import litellm

    litellm.register_model({PRICED: {
        "input_cost_per_token": INPUT_PRICE, "output_cost_per_token": OUTPUT_PRICE,
        "litellm_provider": "openai", "mode": "chat", "max_tokens": 4096,
    }})


@pytest.fixture
def server():
    """Replies "A" (a grade) to every call, at PROMPT_TOKENS in and COMPLETION_TOKENS out."""
    with FaultServer("ok", reply="A", usage=(PROMPT_TOKENS, COMPLETION_TOKENS)) as s:
        yield s


def priced_client(server: FaultServer, cache: ResponseCache | None, budget: float | None = None) -> LLMClient:
    return LLMClient(Endpoint(f"openai/{PRICED}", server.api_base, max_tokens=8), cache=cache, max_concurrency=2,
                     max_retries=0, timeout_s=10.0, max_cost_usd=budget)


def ask(n: int, start: int = 0) -> list[Request]:
    return [Request([{"role": "user", "content": f"q{i}"}]) for i in range(start, start + n)]


def test_the_running_total_is_usage_times_prices_and_cache_hits_cost_nothing(server, tmp_path):
    cache = ResponseCache(tmp_path / "llm_cache.sqlite")
    first = priced_client(server, cache)
    assert all(r.text == "A" for r in first.complete_many(ask(5)))
    assert first.cost_usd == pytest.approx(5 * CALL_COST)
    assert first.stats["cost_usd"] == round(5 * CALL_COST, 6)
    assert cache.spend() == pytest.approx((5 * CALL_COST, CALL_COST))
    # A second client (the next stage, a rerun) starts from what the run spent; its cache hits are free.
    again = priced_client(server, cache)
    results = again.complete_many(ask(5))
    assert all(r.cached for r in results) and server.calls == 5
    assert again.cost_usd == 0.0 and "cost_usd" not in again.stats
    assert cache.spend()[0] == pytest.approx(5 * CALL_COST)
    cache.close()
    # The spend lives in the cache's file, beside the responses.
    with sqlite3.connect(tmp_path / "llm_cache.sqlite") as db:
        assert db.execute("SELECT spent_usd FROM spend_v1").fetchone()[0] == pytest.approx(5 * CALL_COST)


def test_no_budget_is_unlimited_and_a_budget_stops_before_the_call_that_could_pass_it(server, tmp_path):
    cache = ResponseCache(tmp_path / "llm_cache.sqlite")
    priced_client(server, cache).complete_many(ask(20))
    assert server.calls == 20  # no budget: every call made, $0.40
    budget = 20 * CALL_COST + 1.5 * CALL_COST  # room for one more call, not two
    client = priced_client(server, cache, budget)
    client.complete_many(ask(1, start=20))
    with pytest.raises(BudgetExceeded, match=r"\$0\.4200 of max_cost_usd=0\.43.*Raise loop\.max_cost_usd"):
        client.complete_many(ask(3, start=21))
    assert server.calls == 21
    # Cache hits are free, so they are served past the budget.
    assert all(r.cached for r in priced_client(server, cache, budget).complete_many(ask(21)))
    cache.close()


def budget_config(tmp_path: Path, out: str, **kw) -> AnnotateConfig:
    tasks, sims = scored_inputs(tmp_path, "Could you say more?")
    return AnnotateConfig(simulations_path=str(sims), tasks_path=str(tasks),
                          output_path=str(tmp_path / out / "rewards.jsonl"), tokenizer=str(MODEL),
                          metric_weights={"interactivity": 1.0}, batch_size=1, llm_max_concurrency=2,
                          llm_max_retries=0, llm_cache_path=str(tmp_path / out / "llm_cache.sqlite"), **kw)


def argv_of(cfg: AnnotateConfig) -> list[str]:
    return [f"--{k}={v}" if not isinstance(v, dict) else f"--{k}={json.dumps(v)}"
            for k, v in vars(cfg).items() if v is not None]


def test_a_stage_stopped_by_the_budget_keeps_its_records_and_resumes_to_an_uninterrupted_run(
    server, tmp_path, capsys, monkeypatch
):
    judge = {"judge_model": f"openai/{PRICED}", "judge_api_base": server.api_base}
    reference = budget_config(tmp_path, "reference", **judge)
    meta = annotate(reference)
    assert server.calls == 12  # 6 records, 2 candidates with a future each: 2 judge calls a record
    assert meta["counts"]["judge_calls"] == 12
    assert meta["counts"]["judge_cost_usd"] == round(12 * CALL_COST, 6)

    # Batches of one record, $0.04 each: after 3 the spend is $0.12, and one more call could reach $0.14.
    server.calls = 0
    stopped = budget_config(tmp_path, "stopped", max_cost_usd=0.13, **judge)
    monkeypatch.setattr("sys.argv", ["annotate.py"])
    with pytest.raises(SystemExit) as exit_:
        run_main(lambda: annotate_main(argv_of(stopped)))
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "error: the LLM budget is spent: $0.1200 of max_cost_usd=0.13" in err, err
    assert "Raise loop.max_cost_usd (or --max_cost_usd) and rerun the same command: finished records are kept" in err
    assert "Traceback" not in err
    output = Path(stopped.output_path)
    partial = output.with_name("rewards.jsonl.partial")
    assert not output.exists() and len(partial.read_bytes().splitlines()) == 3
    assert server.calls == 6

    # A higher budget resumes where the stage stopped: every record once, no call made twice.
    raised = budget_config(tmp_path, "stopped", max_cost_usd=1.0, **judge)
    meta = annotate(raised)
    assert meta["counts"]["resumed"] == 3 and meta["counts"]["judge_calls"] == 6
    assert meta["counts"]["judge_cost_usd"] == round(6 * CALL_COST, 6)
    assert server.calls == 12
    assert_same_as_uninterrupted(output, Path(reference.output_path))
    cache = ResponseCache(raised.llm_cache_path)
    assert cache.spend()[0] == pytest.approx(12 * CALL_COST)  # the run's spend: both processes' calls
    cache.close()


def test_openings_stopped_by_the_budget_are_kept_and_resumed(tmp_path, capsys, monkeypatch):
    """The contexts stage asks the simulator for openings in waves under a budget: each wave is appended
    when it ends, so a stop keeps what was written, and a higher budget asks only for the rest."""
    from collabloop.stage_configs import ContextsConfig
    from simulate.make_contexts import main as contexts_main
    from simulate.openings import run as make_contexts

    tasks = write_jsonl(tmp_path / "tasks.jsonl", [math_task(i, 2 + i, 1, with_prompt=False) for i in range(6)])

    def config(out: str, **kw) -> ContextsConfig:
        return ContextsConfig(tasks_path=str(tasks), output_path=str(tmp_path / out / "contexts.jsonl"),
                              simulator_model=f"openai/{PRICED}", simulator_api_base=server.api_base,
                              simulator_format="text", llm_max_concurrency=2, llm_max_retries=0,
                              llm_cache_path=str(tmp_path / out / "llm_cache.sqlite"), **kw)

    opening = "Can you help me add two numbers?"
    with FaultServer("ok", reply=opening, usage=(PROMPT_TOKENS, COMPLETION_TOKENS)) as server:
        reference = config("reference")
        assert make_contexts(reference)["counts"]["opening_from_simulator"] == 6
        server.calls = 0
        # Waves of 2 calls at $0.02: after two waves $0.08 is spent, and a third call could reach $0.10.
        stopped = config("stopped", max_cost_usd=0.09)
        monkeypatch.setattr("sys.argv", ["make_contexts.py"])
        with pytest.raises(SystemExit) as exit_:
            run_main(lambda: contexts_main(argv_of(stopped)))
        assert exit_.value.code == 1
        assert "error: the LLM budget is spent: $0.0800 of max_cost_usd=0.09" in capsys.readouterr().err
        output = Path(stopped.output_path)
        partial = output.with_name("contexts.jsonl.partial")
        assert not output.exists() and len(partial.read_bytes().splitlines()) == 4 and server.calls == 4

        meta = make_contexts(config("stopped", max_cost_usd=1.0))
        assert meta["counts"]["resumed"] == 4 and meta["counts"]["opening_from_simulator"] == 2
        assert server.calls == 6
        assert_same_as_uninterrupted(output, Path(reference.output_path))
