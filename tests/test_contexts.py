"""Continuing conversations into multi-turn contexts (CollabLLM's data building)."""

from collabloop.records import Rewarded
from simulate.openings import continue_conversation

PROMPT = [{"role": "user", "content": "I need a sum"}]


def future(*contents, error=None, terminated=False):
    roles = ["user", "assistant"]
    return {"messages": [{"role": roles[i % 2], "content": c} for i, c in enumerate(contents)],
            "terminated": terminated, "error": error}


def record(rewards, futures, turn=0):
    return Rewarded(id=f"t1/turn{turn}", task_id="t1", prompt=PROMPT, turn=turn,
                    responses=[f"reply {k}" for k in range(len(rewards))], gen={},
                    futures=futures, metrics=[{} for _ in rewards], rewards=rewards)


def test_continues_with_the_best_candidate_and_its_longest_future():
    rec = record([0.1, 0.9], [
        [future("from worst")],
        [future("short"), future("longest one", "answer"), future(error="simulator failed")],
    ])
    context, reason = continue_conversation(rec, max_turns=4)
    assert reason == "continued"
    assert context.id == "t1/turn1" and context.turn == 1 and context.task_id == "t1"
    assert context.prompt == [*PROMPT, {"role": "assistant", "content": "reply 1"},
                              {"role": "user", "content": "longest one"}]


def test_reasons_a_conversation_ends():
    assert continue_conversation(record([None, None], [[future("x")], [future("y")]]), 4) == (
        None, "no_scored_candidate")
    assert continue_conversation(record([1.0, 0.0], [[future(error="boom")], [future("y")]]), 4) == (
        None, "no_simulated_user_turn")
    ended = record([1.0, 0.0], [[future("[[TERMINATE CHAT]]", terminated=True)], [future("y")]])
    assert continue_conversation(ended, 4) == (None, "user_ended_conversation")
    assert continue_conversation(record([1.0, 0.0], [[future("more")], [future("y")]], turn=3), 4) == (
        None, "turn_limit")
