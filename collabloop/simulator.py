"""The user simulator: an LLM role-playing a user who knows a hidden goal.

The simulator sees the conversation from the user's side: its own earlier
turns as "assistant" messages and the AI's turns as "user" messages, under a
system prompt that holds the hidden goal. Small chat models follow this
role-swapped form far better than a transcript pasted into one prompt.

Three output formats: "json" asks for {"thought", "message"} (the thought stays
hidden, as in CollabLLM); "text" asks for the message alone; "choice" has the
model pick its message among the sentences of its goal (one, or several in a
row) and the termination signal (structured outputs), for a model too small to write a user's turn
without inventing facts. Parsing never fails: a reply that breaks the asked
format falls back to its cleaned text, and the fallback is counted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from collabloop.llm_client import Request
from collabloop.records import Task

TERMINATION_SIGNAL = "[[TERMINATE CHAT]]"
FORMATS = ("json", "text", "choice")

# The hidden goal comes last: every simulator prompt then starts with the same instructions, which an
# engine's prefix cache computes once for all conversations (on a CPU the simulator's cost is its prompt).
SYSTEM_PROMPT = """You are role-playing a person who chats with an AI assistant to get something done. \
You are the USER, not the assistant.

How to act:
- Start vague: ask for help in a few words, without giving all the details at once.
- Share a detail of what you want only when the assistant asks about it, and answer its questions from what you want.
- You are busy: keep messages short and plain, like a person typing. \
Small typos or a slightly unclear question are fine.
- You may state a preference when it fits, for example that you like short answers.
- Never do the task yourself and never write the assistant's answer for it.
- Stay on your goal; no small talk.
- When the assistant has fully done what you want, or clearly cannot, your message is only {signal}

{format_instruction}

What you want (the assistant cannot see this):
{goal}"""

FORMAT_INSTRUCTIONS = {
    "json": (
        'Reply with one JSON object and nothing else: '
        '{{"thought": "<your private thoughts on the conversation so far>", '
        '"message": "<your next message to the assistant, or {signal}>"}}'
    ),
    "text": "Reply with your next message to the assistant and nothing else.",
    "choice": "Reply with your next message to the assistant: the part of what you want that answers the "
              "assistant, or {signal}",
}

# Where a goal splits into the messages a "choice" simulator picks from: after a sentence, and after a colon
# that introduces one ("You want to know the answer to this question: Tom has ...").
MAX_CHOICE_SENTENCES = 6
_ADDRESSES_THE_ROLE_PLAYER = re.compile(r"you\b", re.IGNORECASE)
_GOAL_SPLIT = re.compile(r"(?<=[.!?])\s+|(?<=:)\s+(?=[A-Z0-9])")

OPENING_INSTRUCTION = "Start the conversation: write your first message to the assistant."

# Prefixes small models put in front of a user turn; they are not part of it.
_SPEAKER_PREFIX = re.compile(r"^\s*(?:user|me|human|message)\s*:\s*", re.IGNORECASE)
_MESSAGE_FIELD = re.compile(r'"(?:message|response)"\s*:\s*"((?:[^"\\]|\\.)*)', re.DOTALL)


@dataclass
class UserTurn:
    message: str
    terminated: bool
    followed_format: bool  # False when the reply broke the asked format and its text was used instead


def _system(task: Task, fmt: str) -> dict:
    instruction = FORMAT_INSTRUCTIONS[fmt].format(signal=TERMINATION_SIGNAL)
    return {
        "role": "system",
        "content": SYSTEM_PROMPT.format(goal=task.goal, signal=TERMINATION_SIGNAL, format_instruction=instruction),
    }


def goal_choices(goal: str) -> list[str]:
    """The messages a "choice" simulator picks from: each run of consecutive sentences of the goal (a single
    fact, or the whole request restated), then the termination signal.

    The embedded 135M model, asked for a number its goal holds, stated it in 38 of 96 free-text replies and
    invented another number in 32; picking among its goal's sentences, it stated it in 92 of 96 and invented
    none. The choice is still the model's: which part of its request answers the assistant, or to stop.
    Runs of several sentences are offered for goals of at most MAX_CHOICE_SENTENCES sentences (their
    number grows with its square), single sentences for longer ones."""
    sentences = [part.strip() for part in _GOAL_SPLIT.split(goal.strip()) if part.strip()]
    # A sentence that speaks to the role-player ("You want the final number") describes the user; it is not
    # something the user says. In the demo's first run such sentences were 22% of the user turns that answered
    # a question, which then revealed nothing.
    said = list(dict.fromkeys(s for s in sentences if not _ADDRESSES_THE_ROLE_PLAYER.match(s))) or sentences
    longest = len(said) if len(said) <= MAX_CHOICE_SENTENCES else 1
    runs = [" ".join(said[i : i + n]) for n in range(1, longest + 1) for i in range(len(said) - n + 1)]
    return [*dict.fromkeys(runs), TERMINATION_SIGNAL]


def _choices(task: Task, fmt: str) -> list[str] | None:
    return goal_choices(task.goal) if fmt == "choice" else None


def opening_request(task: Task, salt: str, fmt: str) -> Request:
    """Ask the simulator for the opening user message of a task."""
    return Request(messages=[_system(task, fmt), {"role": "user", "content": OPENING_INSTRUCTION}], salt=salt,
                   choices=_choices(task, fmt))


def next_turn_request(task: Task, conversation: list[dict], salt: str, fmt: str) -> Request:
    """Ask the simulator for the user's next message after `conversation` (which ends with the AI)."""
    swapped = [_system(task, fmt)]
    for message in conversation:
        if message["role"] == "system":
            continue  # the policy's system prompt is not the user's business
        swapped.append({"role": "assistant" if message["role"] == "user" else "user", "content": message["content"]})
    return Request(messages=swapped, salt=salt, choices=_choices(task, fmt))


def _clean(text: str) -> str:
    text = re.sub(r"^```\w*\s*|\s*```$", "", text.strip())
    text = _SPEAKER_PREFIX.sub("", text.strip())
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def _json_message(text: str) -> str | None:
    """The "message" of a JSON reply, also from a reply cut off mid-object."""
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        try:
            obj = json.loads(text[start : end + 1])
            if isinstance(obj, dict):
                value = obj.get("message", obj.get("response"))
                if isinstance(value, str):
                    return value
        except json.JSONDecodeError:
            pass
    match = _MESSAGE_FIELD.search(text)
    if match:
        try:
            return json.loads(f'"{match.group(1)}"')
        except json.JSONDecodeError:
            return match.group(1)
    return None


def parse_user_turn(text: str, fmt: str) -> UserTurn:
    """Read a simulator reply; never fails (falls back to the cleaned text). The conversation ends only when
    the user's message holds the termination signal, as in CollabLLM: a thought that mentions it does not."""
    if fmt == "choice":  # one of the goal's sentences or the signal, exactly (structured outputs)
        message = text.strip()
        return UserTurn(message, message == TERMINATION_SIGNAL, followed_format=True)
    if fmt == "json":
        message = _json_message(text)
        if message is not None:
            return UserTurn(_clean(message), TERMINATION_SIGNAL in message, followed_format=True)
        cleaned = _clean(text)
        return UserTurn(cleaned, TERMINATION_SIGNAL in cleaned, followed_format=False)
    cleaned = _clean(text)
    # A text reply that is a JSON object anyway (small models imitate) still yields its message.
    if cleaned.startswith("{"):
        message = _json_message(cleaned)
        if message is not None:
            return UserTurn(_clean(message), TERMINATION_SIGNAL in message, followed_format=False)
    return UserTurn(cleaned, TERMINATION_SIGNAL in cleaned, followed_format=True)
