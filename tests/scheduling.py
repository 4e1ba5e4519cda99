"""Per-conversation scheduling on the embedded model, in a process of its own (one vLLM engine for the policy and
the local simulator); tests/test_scheduler.py reads the RESULT line.

    python tests/scheduling.py <model dir> <work dir>
"""

from __future__ import annotations

import json
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def conversations(tag: str, n: int = 6):
    from collabloop.records import Task
    from collabloop.rollout import Rollout

    rollouts = []
    for i in range(n):
        question = f"Sam has {2 + i} apples and gets some more. How many apples does Sam have now?"
        task = Task(id=f"s{i}", task="math", goal=f"Sam has {2 + i} apples and gets {1 + i % 3} more.",
                    reference=str(3 + i + i % 3))
        rollouts.append(Rollout(task=task, salt=f"{tag}/{i}", history=[
            {"role": "user", "content": question},
            {"role": "assistant", "content": "How many more apples does Sam get?"},
        ]))
    return rollouts


def futures(rollouts) -> list:
    return [{"future": r.future, "error": r.error, "terminated": r.terminated, "too_long": r.too_long}
            for r in rollouts]


def main(model_dir: str, work: str) -> None:
    from collabloop.llm_client import Endpoint, LLMClient
    from collabloop.local_llm import LocalModel
    from collabloop.policy import PolicyEngine, SamplingSettings
    from collabloop.response_cache import ResponseCache
    from collabloop.rollout import roll_out
    from tests.fake_openai import FaultServer

    out: dict = {}
    policy = PolicyEngine(model_dir, seed=0, max_model_len=1024)
    sampling = SamplingSettings(0.8, 1.0, 32)

    def local_simulator(cache_name: str) -> LLMClient:
        return LLMClient(Endpoint(f"local/{model_dir}", None, temperature=1.0, max_tokens=24),
                         cache=ResponseCache(Path(work) / cache_name), local=LocalModel(f"local/{model_dir}", 1024))

    # The same conversations twice, the second time with the first one's cache: the same futures. The local
    # simulator's answers are not read back from the cache (an answer found there would end its turn at another
    # step of the engine, and change which turns share a batch).
    runs = []
    for attempt in range(2):
        # As in a fresh process (a batch redone after a kill): prompts the engine computed earlier in this process
        # would be read from its prefix cache, by another kernel, and bfloat16 rounds otherwise.
        policy.llm.llm_engine.reset_prefix_cache()
        simulator = local_simulator("local.sqlite")
        rollouts = conversations("local")
        counts = roll_out(rollouts, 2, simulator, policy, sampling, ("s",), "text", schedule="per_conversation")
        runs.append({"futures": futures(rollouts), "counts": dict(counts), "stats": dict(simulator.stats)})
    out["local"] = runs
    with closing(sqlite3.connect(Path(work) / "local.sqlite")) as db:  # stored for a later stage, in one write
        out["local_cached"] = db.execute("SELECT COUNT(*) FROM responses_v1").fetchone()[0]
    # The 'choice' simulator (structured outputs: its grammars are compiled as its turns are added, not on a
    # thread whose timing would decide which turns share a step).
    choice = []
    for attempt in range(2):
        policy.llm.llm_engine.reset_prefix_cache()
        rollouts = conversations("choice")
        roll_out(rollouts, 2, local_simulator("choice.sqlite"), policy, sampling, ("s",), "choice",
                 schedule="per_conversation")
        choice.append({"futures": futures(rollouts), "goals": [r.task.goal for r in rollouts]})
    out["choice"] = choice
    # The turn-synchronous schedule on the same conversations: the same rules, so the same shape of futures.
    rollouts = conversations("local")
    roll_out(rollouts, 2, local_simulator("sync.sqlite"), policy, sampling, ("s",), "text",
             schedule="turn_synchronous")
    out["turn_synchronous"] = futures(rollouts)

    # A future whose next reply would not fit the policy's context: ended there and counted, never an error.
    history = [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "In base 10?"}]
    room = policy.max_model_len - policy.prompt_tokens(history)
    long = conversations("long", 1)
    long[0].history = list(history)
    counts = roll_out(long, 2, local_simulator("long.sqlite"), policy, SamplingSettings(0.8, 1.0, room), ("s",),
                      "text", schedule="per_conversation")
    out["too_long"] = {**futures(long)[0], "counted": counts["conversations_ended_too_long"]}

    # A remote simulator: its calls as concurrent tasks, within the client's concurrency and rate limits. The
    # server holds each call 0.3 s.
    with FaultServer("hang", hang_s=0.3, reply="Sam gets 2 more.") as server:
        remote = LLMClient(Endpoint("hosted_vllm/simulator", server.api_base, temperature=1.0, max_tokens=24),
                           cache=None, max_concurrency=3, max_requests_per_minute=4, rate_window_s=1.0)
        rollouts = conversations("remote", 8)
        roll_out(rollouts, 2, remote, policy, sampling, ("s",), "text", schedule="per_conversation")
        out["remote"] = {"futures": futures(rollouts), "arrivals": server.arrivals, "hang_s": 0.3,
                         "stats": dict(remote.stats)}
    # A simulator that fails every call: each conversation records the failure; nothing crashes.
    with FaultServer("error") as server:
        failing = LLMClient(Endpoint("hosted_vllm/simulator", server.api_base, max_tokens=24), cache=None,
                            max_retries=1, backoff_base_s=0.01)
        rollouts = conversations("failing", 3)
        roll_out(rollouts, 2, failing, policy, sampling, ("s",), "text", schedule="per_conversation")
        out["failing"] = {"futures": futures(rollouts), "stats": dict(failing.stats)}
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:])
