"""Online GRPO end to end: accelerate launch (ZeRO-2, 2 gloo processes), the embedded model, and a reward
that runs the real simulator server and the metrics on every sampled reply."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import REPO, math_task, read_jsonl, write_jsonl
from tests.test_trainers import assert_trained

pytestmark = pytest.mark.slow


def test_grpo_with_the_multiturn_reward(simulator, tmp_path):
    tasks = write_jsonl(tmp_path / "tasks.jsonl", [math_task(i, 1 + i, 1) for i in range(2)])
    contexts = write_jsonl(tmp_path / "contexts.jsonl", [
        {"id": f"t{i}/turn0", "task_id": f"t{i}", "prompt": t["prompt"], "turn": 0}
        for i, t in enumerate(read_jsonl(tasks))
    ])
    api = simulator.api_base
    result = subprocess.run(
        [str(REPO / ".venv/bin/accelerate"), "launch", "--config_file", "configs/zero2.yaml", "--num_processes", "2",
         "dpo_iteration/train_grpo.py", "--contexts_path", str(contexts), "--tasks_path", str(tasks),
         "--model_name_or_path", "models/SmolLM2-135M-Instruct", "--output_dir", str(tmp_path / "grpo" / "model"),
         "--metric_weights", json.dumps({"accuracy": 1.0, "interactivity": 1.0, "token_amount": -1e-3}),
         "--num_futures", "1", "--window_turns", "1", "--assistant_max_tokens", "24", "--simulator_max_tokens", "24",
         "--simulator_api_base", api, "--judge_api_base", api, "--assistant_api_base", api,
         "--num_generations", "4", "--per_device_train_batch_size", "2", "--max_completion_length", "24",
         "--max_steps", "2", "--learning_rate", "5e-5", "--logging_steps", "1", "--save_strategy", "no",
         "--report_to", "none", "--seed", "0", "--llm_cache_path", str(tmp_path / "cache.sqlite")],
        cwd=REPO, capture_output=True, text=True, timeout=1200,
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    # On-policy GRPO with beta 0 has a loss of zero up to rounding (the ratio is 1 and each group's advantages
    # sum to zero) while its gradient is not zero: the weights must change, the loss need not move.
    meta = assert_trained(tmp_path / "grpo" / "model", min_logged_steps=2, loss_moves=False)
    assert meta["counts"]["futures"] > 0 and meta["counts"]["futures_failed"] == 0
    logs = json.loads((tmp_path / "grpo" / "model" / "train_metrics.json").read_text())["log_history"]
    rewards = [e["rewards/multiturn_reward/mean"] for e in logs if "rewards/multiturn_reward/mean" in e]
    assert rewards and all(isinstance(r, float) for r in rewards)
