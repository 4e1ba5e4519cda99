"""The user simulator's prompts and the parsing of its replies (never fails, counts fallbacks)."""

import pytest

from collabloop.records import Task
from collabloop.simulator import TERMINATION_SIGNAL, next_turn_request, opening_request, parse_user_turn

TASK = Task(id="t", task="math", goal="You want to know 2 + 3.", reference="5")


def test_requests_hide_nothing_from_the_simulator_and_swap_roles():
    conversation = [
        {"role": "system", "content": "policy system prompt"},
        {"role": "user", "content": "help with a sum"},
        {"role": "assistant", "content": "Which numbers?"},
    ]
    request = next_turn_request(TASK, conversation, salt="s", fmt="json")
    system, *rest = request.messages
    assert "You want to know 2 + 3." in system["content"] and TERMINATION_SIGNAL in system["content"]
    assert '"message"' in system["content"]
    # The simulator is the assistant of its own chat: our user turns are its replies.
    assert rest == [{"role": "assistant", "content": "help with a sum"}, {"role": "user", "content": "Which numbers?"}]
    opening = opening_request(TASK, salt="o", fmt="text")
    assert opening.messages[-1]["role"] == "user" and "first message" in opening.messages[-1]["content"]


@pytest.mark.parametrize(
    "text, fmt, message, terminated, followed",
    [
        ('{"thought": "they asked", "message": "2 and 3"}', "json", "2 and 3", False, True),
        ('Sure! {"thought": "ok", "message": "the numbers are 2 and 3"} hope that helps', "json",
         "the numbers are 2 and 3", False, True),
        ('{"thought": "long thoughts", "message": "it is 2 and', "json", "it is 2 and", False, True),  # cut off
        ('{"thought": "done", "message": "[[TERMINATE CHAT]]"}', "json", "[[TERMINATE CHAT]]", True, True),
        ("User: 2 and 3 please", "json", "2 and 3 please", False, False),  # broke the format: its text
        ('"2 and 3"', "text", "2 and 3", False, True),
        ("Thanks! [[TERMINATE CHAT]]", "text", "Thanks! [[TERMINATE CHAT]]", True, True),
        ('{"message": "imitating json"}', "text", "imitating json", False, False),
        # The signal counts in the message only, never in the thought (CollabLLM reads the response field).
        ('{"thought": "not yet [[TERMINATE CHAT]]", "message": "And 3?"}', "json", "And 3?", False, True),
        ('{"thought": "I will say [[TERMINATE CHAT]] once it is right", "message": "No, 5."}', "text", "No, 5.",
         False, False),
    ],
)
def test_parse_user_turn(text, fmt, message, terminated, followed):
    turn = parse_user_turn(text, fmt)
    assert (turn.message, turn.terminated, turn.followed_format) == (message, terminated, followed)


def test_end_on_answer_ends_answered_conversations_without_calling_anyone():
    from collabloop.records import Context
    from collabloop.rollout import Rollout, roll_out
    from simulate.conversations import sample_contexts

    task = Task(id="t", task="math", goal="Know 2 + 3.", reference="5")
    opening = [{"role": "user", "content": "What is 2 + 3?"}]

    def rollout(reply: str) -> Rollout:
        return Rollout(task=task, salt=reply, history=[*opening, {"role": "assistant", "content": reply}])

    answered = [rollout("2 + 3 = 5."), rollout("It is 4.")]  # a wrong answer is an answer too
    # No simulator and no engine: a call to either would raise.
    counts = roll_out(answered, 2, None, None, None, ("t",), "text", end_on_answer=True)
    assert [r.terminated for r in answered] == [True, True] and [r.future for r in answered] == [[], []]
    assert counts["conversations_ended_on_answer"] == 2

    asking = rollout("Which numbers do you want to add?")
    counts = roll_out([asking], 0, None, None, None, ("t",), "text", end_on_answer=True)
    assert not asking.terminated and counts["conversations_ended_on_answer"] == 0
    unset = rollout("2 + 3 = 5.")
    roll_out([unset], 0, None, None, None, ("t",), "text")
    assert not unset.terminated  # off by default

    contexts = [Context(id="t/turn0", task_id="t", prompt=opening, turn=0)]
    assert sample_contexts(contexts, 1) == contexts
    assert [c.id for c in sample_contexts(contexts, 3)] == ["t/turn0/sample0", "t/turn0/sample1", "t/turn0/sample2"]
    assert all(c.prompt == opening and c.task_id == "t" for c in sample_contexts(contexts, 3))
