"""The user simulator: an LLM role-playing a user who knows a hidden goal.

The simulator sees the conversation from the user's side: its own earlier
turns as "assistant" messages and the AI's turns as "user" messages, under a
system prompt that holds the hidden goal. Small chat models follow this
role-swapped form far better than a transcript pasted into one prompt.
"""

from __future__ import annotations

import re

from collabloop.llm_client import Request
from collabloop.records import Task

TERMINATION_SIGNAL = "[[TERMINATE CHAT]]"

SYSTEM_PROMPT = """You are role-playing a human user who is chatting with an AI assistant. You are NOT the assistant.

Your goal (the assistant cannot see this):
{goal}

How to behave:
- Write only your next message to the assistant, in plain words, as a person would type it.
- Do not solve the task yourself; you want the assistant to do it.
- Reveal details of your goal a little at a time; when the assistant asks a question, answer it from your goal.
- Keep messages short and stay on your goal.
- When the assistant has fully achieved your goal, or clearly cannot, reply with exactly {signal}"""

OPENING_INSTRUCTION = (
    "Write the first message you send to the assistant to start working on your goal. "
    "Write only that message."
)

# Prefixes small models put in front of a user turn; they are not part of it.
_SPEAKER_PREFIX = re.compile(r"^\s*(?:user|me|human)\s*:\s*", re.IGNORECASE)


def _system(task: Task) -> dict:
    return {"role": "system", "content": SYSTEM_PROMPT.format(goal=task.goal, signal=TERMINATION_SIGNAL)}


def opening_request(task: Task, salt: str) -> Request:
    """Ask the simulator for the opening user message of a task."""
    return Request(messages=[_system(task), {"role": "user", "content": OPENING_INSTRUCTION}], salt=salt)


def next_turn_request(task: Task, conversation: list[dict], salt: str) -> Request:
    """Ask the simulator for the user's next message after `conversation` (which ends with the AI)."""
    swapped = [_system(task)]
    for message in conversation:
        if message["role"] == "system":
            continue  # the policy's system prompt is not the user's business
        swapped.append({"role": "assistant" if message["role"] == "user" else "user", "content": message["content"]})
    return Request(messages=swapped, salt=salt)


def parse_user_turn(text: str) -> tuple[str, bool]:
    """Clean a simulator reply; returns (message, terminated)."""
    terminated = TERMINATION_SIGNAL in text
    message = _SPEAKER_PREFIX.sub("", text.strip())
    if len(message) >= 2 and message[0] == message[-1] and message[0] in "\"'":
        message = message[1:-1].strip()
    return message, terminated
