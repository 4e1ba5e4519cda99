"""Collaboration, measured: does an assistant turn ask the user, and what did a simulated user's turn do.

These are the definitions the reports, the `ask_rate` metric, `end_on_answer` and the simulate and
evaluate stages' counts share, so "asked" and "revealed" mean one thing everywhere.

- An assistant turn **asks** when it holds a question mark and states nothing new: no number that the
  conversation before it does not already hold, and no code block. "How many apples did Tom have before
  he got 4?" asks; "Did you mean 4 + 5? That is 9." answers.
- A task's **withheld facts** are the numbers in its goal (the whole request, with the fact only the user
  has) that its opening does not state. A task stated in full withholds nothing.
- A simulated user's turn **revealed** a fact when it states a withheld number, **terminated** the chat
  when it holds the termination signal, and **drifted** when it states a number that is neither in its
  goal nor anywhere in the conversation before it (an invented fact).
"""

from __future__ import annotations

import re
from collections import Counter

# The system prompt of the candidates sampled to explore collaboration (generate.collaborative_candidates),
# in the spirit of CollabLLM's collaborative prompt; the trained policy is evaluated without it.
COLLABORATIVE_SYSTEM_PROMPT = (
    "You are a collaborative assistant. Before you answer, check whether the user's request holds everything "
    "you need. If a fact only the user knows is missing (a number, a name, a preference), do not guess: ask "
    "one short, specific question for it. If nothing is missing, answer directly and briefly."
)

_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w])")
_CODE_FENCE = "```"


def numbers(text: str) -> set[str]:
    """The numbers written in `text`, as strings ('4', '2.5'); '4.0' and '4' count as one."""
    out = set()
    for match in _NUMBER.findall(text):
        value = float(match)
        out.add(str(int(value)) if value.is_integer() else str(value))
    return out


def _text_of(messages: list[dict]) -> str:
    return "\n".join(m["content"] for m in messages if m["role"] != "system")


def asks_user(reply: str, before: list[dict]) -> bool:
    """Whether the assistant reply `reply`, written after the messages `before`, asks the user for something."""
    if "?" not in reply or _CODE_FENCE in reply:
        return False
    return not (numbers(reply) - numbers(_text_of(before)))


def withheld_facts(goal: str, opening: list[dict]) -> set[str]:
    """The numbers the user's goal holds and the opening messages do not state."""
    return numbers(goal) - numbers(_text_of(opening))


def opening_of(history: list[dict]) -> list[dict]:
    """The messages up to and including the first user turn: what the user said before the assistant spoke."""
    for i, message in enumerate(history):
        if message["role"] == "user":
            return history[: i + 1]
    return list(history)


def user_turn_counts(goal: str, conversation: list[dict], first_new: int, termination_signal: str) -> Counter:
    """Counts over the simulated user turns `conversation[first_new:]` (the turns before it, from the opening
    on, are what the user had already said): user_turns, user_revealed, user_terminated, user_drifted."""
    counts: Counter = Counter()
    withheld = withheld_facts(goal, opening_of(conversation))
    known = numbers(goal)
    for i in range(first_new, len(conversation)):
        message = conversation[i]
        if message["role"] != "user":
            continue
        stated = numbers(message["content"])
        counts["user_turns"] += 1
        counts["user_revealed"] += int(bool(stated & withheld))
        counts["user_terminated"] += int(termination_signal in message["content"])
        counts["user_drifted"] += int(bool(stated - known - numbers(_text_of(conversation[:i]))))
    return counts
