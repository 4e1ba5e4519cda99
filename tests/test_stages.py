"""Each stage on a few records, with the real engines: vLLM offline for the policy,
a real local vLLM OpenAI server for the simulator and judge (through litellm)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest

from collabloop.jsonl import read_records
from collabloop.records import Context, Generation, Pair, Rewarded, Simulation
from collabloop.stage_configs import ContextsConfig
from simulate.openings import run as make_contexts
from tests import warm
from tests.conftest import PYTHON, REPO, free_port, math_task, read_jsonl, write_jsonl

pytestmark = pytest.mark.slow


def stage(script: str, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    result = warm.run([PYTHON, script, *map(str, args)], cwd=REPO, env=env, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{script} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def remote(server) -> list[str]:
    return ["--simulator_model", "hosted_vllm/simulator", "--simulator_api_base", server.api_base]


def test_contexts_from_tasks_and_from_the_simulator(simulator, tmp_path):
    tasks = write_jsonl(tmp_path / "tasks.jsonl", [math_task(0, 2, 3), math_task(1, 4, 1, with_prompt=False),
                                                   math_task(2, 3, 3), math_task(3, 2, 2, with_prompt=False)])
    cfg = ContextsConfig(tasks_path=str(tasks), output_path=str(tmp_path / "contexts.jsonl"),
                         simulator_api_base=simulator.api_base)
    meta = make_contexts(cfg)
    assert meta["counts"]["opening_from_task"] == 2
    assert meta["counts"]["opening_from_simulator"] == 2
    contexts = read_records(tmp_path / "contexts.jsonl", Context)
    assert [c.task_id for c in contexts] == ["t0", "t1", "t2", "t3"]
    assert contexts[0].prompt == math_task(0, 2, 3)["prompt"]
    for c in contexts:
        assert c.prompt[-1]["role"] == "user" and c.prompt[-1]["content"].strip()
    assert (tmp_path / "contexts.config.yaml").exists()
    # Same inputs and config: up to date, nothing redone, no new simulator call.
    assert make_contexts(cfg) is None


def test_generate_simulate_annotate_pairs(simulator, model_dir, tmp_path):
    tasks = write_jsonl(tmp_path / "tasks.jsonl", [math_task(i, 2 + i, 1 + i % 3) for i in range(3)])
    contexts = write_jsonl(tmp_path / "contexts.jsonl", [
        {"id": f"t{i}/turn0", "task_id": f"t{i}", "prompt": t["prompt"], "turn": 0}
        for i, t in enumerate(read_jsonl(tasks))
    ])
    out = stage("generation/generate.py", "--contexts_path", contexts, "--output_path", tmp_path / "generations.jsonl",
                "--model", model_dir, "--num_candidates", 3, "--max_new_tokens", 32)
    assert "records_out=3" in out.stdout and "responses_generated=9" in out.stdout
    generations = read_records(tmp_path / "generations.jsonl", Generation)
    assert all(len(g.responses) == 3 for g in generations)
    assert generations[0].gen["seed"] == 0 and generations[0].gen["sampling"]["max_new_tokens"] == 32

    stage("simulate/simulate_futures.py", "--generations_path", tmp_path / "generations.jsonl",
          "--tasks_path", tasks, "--output_path", tmp_path / "simulations.jsonl", "--model", model_dir,
          "--num_futures", 2, "--window_turns", 1, "--max_new_tokens", 32, *remote(simulator))
    simulations = read_records(tmp_path / "simulations.jsonl", Simulation)
    for sim in simulations:
        assert len(sim.futures) == 3 and all(len(per) == 2 for per in sim.futures)
        for per in sim.futures:
            for future in per:
                assert future["error"] is None
                roles = [m["role"] for m in future["messages"]]
                assert roles == (["user"] if future["terminated"] else ["user", "assistant"])

    stage("annotate_data/annotate.py", "--simulations_path", tmp_path / "simulations.jsonl", "--tasks_path", tasks,
          "--output_path", tmp_path / "rewards.jsonl", "--tokenizer", model_dir,
          "--judge_model", "hosted_vllm/simulator", "--judge_api_base", simulator.api_base)
    rewarded = read_records(tmp_path / "rewards.jsonl", Rewarded)
    for rec in rewarded:
        for k, per in enumerate(rec.metrics):
            assert set(per) == {"accuracy", "interactivity", "token_amount"}
            assert all(v in (0.0, 1.0) for v in per["accuracy"]["values"])
            assert all(v > 0 for v in per["token_amount"]["values"])
            if rec.rewards[k] is not None:  # MR = mean over futures of the clipped weighted sum
                futures = [
                    per["accuracy"]["values"][s] + per["interactivity"]["values"][s]
                    - 1e-4 * per["token_amount"]["values"][s]
                    for s in range(2)
                    if per["interactivity"]["values"][s] is not None
                ]
                assert rec.rewards[k] == pytest.approx(sum(futures) / len(futures))

    out = stage("dpo_iteration/pairs.py", "--rewards_path", tmp_path / "rewards.jsonl",
                "--output_path", tmp_path / "pairs.jsonl")
    pairs = read_records(tmp_path / "pairs.jsonl", Pair)
    assert len(pairs) >= 1
    for p in pairs:
        assert p.chosen_reward - p.rejected_reward == pytest.approx(p.margin) and p.margin > 0
    for name in ("generations", "simulations", "rewards", "pairs"):
        assert (tmp_path / f"{name}.meta.json").exists() and (tmp_path / f"{name}.config.yaml").exists()


def test_failed_simulator_calls_are_recorded_and_never_scored(model_dir, tmp_path):
    tasks = write_jsonl(tmp_path / "tasks.jsonl", [math_task(0, 2, 3)])
    generations = write_jsonl(tmp_path / "generations.jsonl", [{
        "id": "t0/turn0", "task_id": "t0", "prompt": math_task(0, 2, 3)["prompt"], "turn": 0,
        "responses": ["5", "7"], "gen": {},
    }])
    dead = ["--simulator_model", "hosted_vllm/simulator", "--simulator_api_base", f"http://127.0.0.1:{free_port()}/v1",
            "--llm_max_retries", 1, "--llm_timeout_s", 5, "--model", model_dir]
    # Above the allowed failure fraction the stage fails and writes no output.
    failed = stage("simulate/simulate_futures.py", "--generations_path", generations, "--tasks_path", tasks,
                   "--output_path", tmp_path / "simulations.jsonl", *dead, check=False)
    assert failed.returncode != 0
    assert "4 of 4 failed (100%), above max_failure_fraction=0.2" in failed.stderr  # 2 candidates x 2 futures
    assert "Traceback" not in failed.stderr
    assert not (tmp_path / "simulations.jsonl").exists()
    # Allowed: the failures are recorded in the futures...
    stage("simulate/simulate_futures.py", "--generations_path", generations, "--tasks_path", tasks,
          "--output_path", tmp_path / "simulations.jsonl", *dead, "--num_futures", 1, "--max_failure_fraction", 1.0)
    sim = read_records(tmp_path / "simulations.jsonl", Simulation)[0]
    assert all(f["error"].startswith("simulator failed at turn 1") for per in sim.futures for f in per)
    # ...excluded from every mean (reward null, not 0), and counted when pairs are built.
    stage("annotate_data/annotate.py", "--simulations_path", tmp_path / "simulations.jsonl", "--tasks_path", tasks,
          "--output_path", tmp_path / "rewards.jsonl", "--tokenizer", model_dir,
          "--metric_weights", "{accuracy: 1, token_amount: -1e-4}")
    rec = read_records(tmp_path / "rewards.jsonl", Rewarded)[0]
    assert rec.rewards == [None, None]
    assert rec.metrics[0]["accuracy"]["mean"] is None
    assert rec.metrics[0]["accuracy"]["errors"][0].startswith("future failed: simulator failed")
    out = stage("dpo_iteration/pairs.py", "--rewards_path", tmp_path / "rewards.jsonl",
                "--output_path", tmp_path / "pairs.jsonl")
    assert "dropped_fewer_than_two_rewards=1" in out.stdout and "records_out=0" in out.stdout


def test_generate_killed_at_a_random_moment_resumes_to_the_same_output(model_dir, tmp_path):
    """The suite's kill from outside at a random moment (the other stages are killed at chosen points by
    fail points in tests/test_faults.py): after a random number of finished records and a random delay."""
    contexts = write_jsonl(tmp_path / "contexts.jsonl", [
        {"id": f"c{i}", "task_id": f"t{i}", "turn": 0,
         "prompt": [{"role": "user", "content": f"Tell me a short story about the number {i}."}]}
        for i in range(6)
    ])
    args = ["--contexts_path", contexts, "--model", model_dir, "--num_candidates", 2,
            "--max_new_tokens", 48, "--batch_size", 1]
    stage("generation/generate.py", *args, "--output_path", tmp_path / "clean" / "generations.jsonl")

    output = tmp_path / "killed" / "generations.jsonl"
    partial = output.with_name("generations.jsonl.partial")
    process = warm.start([PYTHON, "generation/generate.py", *map(str, args), "--output_path", str(output)], cwd=REPO)
    rng = random.Random(20261201)
    target = rng.randint(1, 4)
    deadline = time.time() + 300
    while time.time() < deadline:
        if partial.exists() and len(partial.read_text().splitlines()) >= target:
            break
        time.sleep(0.05)
    time.sleep(rng.uniform(0, 0.5))
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    lines_at_kill = len(partial.read_text().splitlines())
    assert target <= lines_at_kill < 6 and not output.exists(), "the kill must land mid-run"

    resumed = stage("generation/generate.py", *args, "--output_path", output)
    assert f"resumed={lines_at_kill}" in resumed.stdout
    clean = read_jsonl(tmp_path / "clean" / "generations.jsonl")
    again = read_jsonl(output)
    assert [r["id"] for r in again] == [f"c{i}" for i in range(6)]  # none lost, none doubled, input order
    assert again == clean
    assert not partial.exists()


def test_collaborative_candidates_and_a_user_who_picks_from_its_goal(simulator, model_dir, tmp_path):
    """generate.collaborative_candidates on the real engine; simulator_format choice on both backends (the
    local engine's structured outputs, and a vLLM server's through litellm): every user turn is a sentence of
    the goal or the termination signal."""
    from collabloop.simulator import goal_choices

    tasks = write_jsonl(tmp_path / "tasks.jsonl", [math_task(i, 2 + i, 1 + i % 3) for i in range(3)])
    openings = [{"id": f"t{i}/turn0", "task_id": f"t{i}", "prompt": t["prompt"], "turn": 0}
                for i, t in enumerate(read_jsonl(tasks))]
    continued = {"id": "t0/turn1", "task_id": "t0", "turn": 1, "prompt": [
        *openings[0]["prompt"], {"role": "assistant", "content": "Could you tell me how many he has?"},
        {"role": "user", "content": "He has 2."}]}
    contexts = write_jsonl(tmp_path / "contexts.jsonl", [*openings, continued])
    stage("generation/generate.py", "--contexts_path", contexts, "--output_path", tmp_path / "generations.jsonl",
          "--model", model_dir, "--num_candidates", 3, "--max_new_tokens", 24, "--collaborative_candidates", 2,
          "--collaborative_reply_opening", "Could you tell me")
    generations = read_records(tmp_path / "generations.jsonl", Generation)
    assert all(g.gen["collaborative_candidates"] == 2 for g in generations)
    # The opening starts the collaborative replies to an opening turn; after the user's answer none is forced.
    assert all(r.startswith("Could you tell me") for g in generations[:3] for r in g.responses[1:])
    assert not any(r.startswith("Could you tell me") for r in generations[3].responses)
    assert not any(g.responses[0].startswith("Could you tell me") for g in generations)
    goals = {t["id"]: t["goal"] for t in read_jsonl(tasks)}
    for name, backend in (("local", ["--simulator_model", f"local/{model_dir}"]), ("server", remote(simulator))):
        out = tmp_path / f"simulations_{name}.jsonl"
        stage("simulate/simulate_futures.py", "--generations_path", tmp_path / "generations.jsonl",
              "--tasks_path", tasks, "--output_path", out, "--model", model_dir, "--num_futures", 1,
              "--window_turns", 1, "--max_new_tokens", 16, "--simulator_format", "choice", *backend)
        users = [(s.task_id, m["content"]) for s in read_records(out, Simulation) for per in s.futures
                 for f in per for m in f["messages"] if m["role"] == "user"]
        assert len(users) == 12, name
        assert all(text in goal_choices(goals[task_id]) for task_id, text in users), (name, users)
