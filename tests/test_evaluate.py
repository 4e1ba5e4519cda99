"""Evaluation: full conversations between the policy (vLLM) and the simulator (a real local server), scored."""

from __future__ import annotations

import json
import os
import signal

import pytest

from collabloop.jsonl import read_records
from collabloop.records import EvalConversation
from tests.conftest import math_task, read_jsonl, write_jsonl
from tests.test_stages import remote, stage

pytestmark = pytest.mark.slow

METRICS = ["accuracy", "judge_accuracy", "interactivity", "token_amount"]


def evaluate(tmp_path, simulator, model_dir, out: str, *extra, **kwargs):
    return stage(
        "simulate/evaluate.py", "--contexts_path", tmp_path / "contexts.jsonl",
        "--tasks_path", tmp_path / "tasks.jsonl",
        "--output_dir", tmp_path / out, "--model", model_dir, "--max_turns", 3, "--max_new_tokens", 48,
        "--metrics", json.dumps(METRICS), "--tokenizer", model_dir, "--judge_api_base", simulator.api_base,
        "--llm_cache_path", tmp_path / "llm_cache.sqlite", "--iteration", 0, "--batch_size", 2, *remote(simulator),
        *extra, **kwargs,
    )


def test_full_conversations_scored_reproducible_and_resumed_after_a_kill(simulator, model_dir, tmp_path):
    tasks = write_jsonl(tmp_path / "tasks.jsonl", [math_task(i, 1 + i, 2) for i in range(3)])
    write_jsonl(tmp_path / "contexts.jsonl", [
        {"id": f"t{i}/turn0", "task_id": f"t{i}", "prompt": t["prompt"], "turn": 0}
        for i, t in enumerate(read_jsonl(tasks))
    ])
    first = evaluate(tmp_path, simulator, model_dir, "eval_a")
    assert "records_out=3" in first.stdout

    conversations = read_records(tmp_path / "eval_a" / "conversations.jsonl", EvalConversation)
    assert [c.task_id for c in conversations] == ["t0", "t1", "t2"]
    for task, conv in zip(read_jsonl(tasks), conversations):
        assert conv.error is None
        assert conv.messages[: len(task["prompt"])] == task["prompt"]
        roles = [m["role"] for m in conv.messages]
        assert roles[:2] == ["user", "assistant"]  # the policy answers the opening
        assert all(a != b for a, b in zip(roles, roles[1:]))  # turns alternate
        assistant_turns = roles.count("assistant")
        assert 1 <= assistant_turns <= 3  # max_turns
        if not conv.terminated:
            assert assistant_turns == 3 and roles[-1] == "assistant"
        assert conv.metrics["turns"] == assistant_turns
        assert set(conv.metrics) == {*METRICS, "turns"}
        for name in ("accuracy", "judge_accuracy", "interactivity"):
            value = conv.metrics[name]
            assert value is None and name in conv.metric_errors or 0.0 <= value <= 1.0
        assert conv.metrics["token_amount"] > 0

    summary = json.loads((tmp_path / "eval_a" / "summary.json").read_text())
    assert summary["num_conversations"] == 3 and summary["iteration"] == 0
    turns = summary["metrics"]["turns"]
    assert turns["n"] == 3 and turns["ci_low"] <= turns["mean"] <= turns["ci_high"]
    assert turns["mean"] == pytest.approx(sum(c.metrics["turns"] for c in conversations) / 3)

    # The same seed and the same simulator cache: the same conversations, hence only cached simulator and judge
    # answers (a different policy reply would have missed the cache), and the same numbers.
    # Killed after its first batch (a fail point, collabloop/failpoints.py), then resumed: the same
    # conversations byte for byte, every simulator and judge call answered by the cache.
    killed = evaluate(tmp_path, simulator, model_dir, "eval_b", check=False,
                      env={**os.environ, "COLLABLOOP_FAILPOINT": "append:1"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    partial = tmp_path / "eval_b" / "conversations.jsonl.partial"
    assert len(partial.read_bytes().splitlines()) == 2 and not (tmp_path / "eval_b" / "summary.json").exists()
    second = evaluate(tmp_path, simulator, model_dir, "eval_b")
    assert "resuming, 2 records already finished" in second.stderr, second.stderr[-2000:]
    assert "simulator_calls=0" in second.stdout and "judge_calls=0" in second.stdout
    assert not partial.exists()
    again = json.loads((tmp_path / "eval_b" / "summary.json").read_text())
    assert again == summary
    assert (tmp_path / "eval_b" / "conversations.jsonl").read_text() == (
        tmp_path / "eval_a" / "conversations.jsonl").read_text()
    assert json.loads((tmp_path / "eval_b" / "conversations.meta.json").read_text())["status"] == "complete"

    (tmp_path / "eval_a" / "summary.json").unlink()
    third = evaluate(tmp_path, simulator, model_dir, "eval_a")
    assert "up to date" in third.stdout
    assert json.loads((tmp_path / "eval_a" / "summary.json").read_text()) == summary
