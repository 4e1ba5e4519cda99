"""Per-conversation scheduling (collabloop/scheduler.py) on the embedded model: reproducible with local engines,
the same turn rules as the turn-synchronous schedule, and a remote simulator's calls as concurrent tasks within
the client's concurrency and rate limits, failures recorded and never a crash."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from collabloop.llm_client import Endpoint, LLMClient
from collabloop.local_llm import LocalModel
from collabloop.policy import LazyPolicyEngine
from collabloop.rollout import resolve_schedule
from collabloop.simulator import TERMINATION_SIGNAL
from tests.conftest import REPO


@pytest.fixture(scope="module")
def scheduled(model_dir, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("scheduling")
    result = subprocess.run([sys.executable, "tests/scheduling.py", str(model_dir), str(work)],
                            cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def test_auto_is_per_conversation_where_reruns_keep_their_text():
    class ServedAssistant:  # what GRPO's futures use: it takes batches only
        def chat(self, *args, **kwargs): ...

    engine = LazyPolicyEngine("any model", 0)  # not started
    local = LLMClient(Endpoint("local/any model"), local=LocalModel("local/any model"))
    remote = LLMClient(Endpoint("hosted_vllm/simulator", "http://127.0.0.1:1/v1"))
    assert resolve_schedule("auto", engine, local) == "per_conversation"
    assert resolve_schedule("auto", engine, remote) == "turn_synchronous"  # answers arrive when the server sends
    assert resolve_schedule("per_conversation", engine, remote) == "per_conversation"  # asked for: it is done
    assert resolve_schedule("auto", ServedAssistant(), local) == "turn_synchronous"
    assert resolve_schedule("turn_synchronous", engine, local) == "turn_synchronous"
    with pytest.raises(ValueError, match="per_conversation needs the policy as a vLLM engine"):
        resolve_schedule("per_conversation", ServedAssistant(), local)


@pytest.mark.slow
def test_local_engines_give_the_same_futures_again(scheduled):
    first, again = scheduled["local"]
    assert first["futures"] == again["futures"]
    assert all(f["error"] is None and len(f["future"]) == 4 for f in first["futures"])  # 2 exchanges each
    assert len({f["future"][1]["content"] for f in first["futures"]}) > 1  # sampled, conversation by conversation
    # Every user turn was asked of the engine both times: a local simulator's answers are not read back here.
    assert first["stats"]["calls"] == again["stats"]["calls"] == 12 and "cache_hits" not in again["stats"]
    assert scheduled["local_cached"] == 12  # yet every answer was stored, for a turn-synchronous rerun to read
    assert first["counts"]["user_turns"] == 12


@pytest.mark.slow
def test_a_user_who_picks_from_its_goal_is_reproducible_too(scheduled):
    first, again = scheduled["choice"]
    assert first["futures"] == again["futures"]
    for future, goal in zip(first["futures"], first["goals"]):
        assert future["error"] is None
        users = [m["content"] for m in future["future"] if m["role"] == "user"]
        assert users and all(u in goal or u == TERMINATION_SIGNAL for u in users)  # a part of its goal, or done


@pytest.mark.slow
def test_the_schedules_apply_the_same_turn_rules(scheduled):
    # The same conversations turn-synchronously: other seeds, so other text, but the same turns.
    per_conversation = scheduled["local"][0]["futures"]
    assert [[m["role"] for m in f["future"]] for f in scheduled["turn_synchronous"]] == \
           [[m["role"] for m in f["future"]] for f in per_conversation]
    ended = scheduled["too_long"]
    assert ended["too_long"] and ended["error"] is None and ended["counted"] == 1
    assert [m["role"] for m in ended["future"]] == ["user"]  # the user's turn, then no reply that fits


@pytest.mark.slow
def test_a_remote_simulator_runs_concurrently_within_its_limits(scheduled):
    remote = scheduled["remote"]
    assert all(f["error"] is None and len(f["future"]) == 4 for f in remote["futures"])
    assert all(f["future"][0]["content"] == "Sam gets 2 more." for f in remote["futures"])
    arrivals, hold_s = remote["arrivals"], remote["hang_s"]
    assert len(arrivals) == 16  # 8 conversations, 2 user turns each
    # At most 3 calls in flight (llm_max_concurrency): the server holds each for hold_s.
    in_flight = [sum(1 for b in arrivals if a - hold_s < b <= a) for a in arrivals]
    assert max(in_flight) <= 3
    # At most 4 calls started in any 1 s window (the rate limit), counted over 0.5 s: a call reaches the server
    # a little after it starts, later while the engine steps in the same process. Unlimited, 3 calls in flight
    # held 0.3 s each would put 5 or more arrivals in 0.5 s.
    assert max(sum(1 for b in arrivals if a <= b < a + 0.5) for a in arrivals) <= 4
    assert remote["stats"]["rate_limit_waits"] > 0 and remote["stats"]["calls"] == 16


@pytest.mark.slow
def test_a_failing_remote_simulator_is_recorded_per_conversation(scheduled):
    failing = scheduled["failing"]
    assert all(f["future"] == [] and "simulator failed at turn 1" in f["error"] for f in failing["futures"])
    assert failing["stats"]["failures"] == 3 and failing["stats"]["calls"] == 6  # one retry each
