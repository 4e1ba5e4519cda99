"""Conversations played on: the simulator plays the user, the policy the assistant.

`roll_out` advances a batch of conversations turn by turn. Turn-synchronous batching: at every turn
the user turns of all live conversations go to the simulator concurrently, then all assistant turns
go to the vLLM engine as one batch. The simulate and evaluate stages and the GRPO trainer's
multi-turn reward use it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from collabloop import grader_talk
from collabloop.collaboration import user_turn_counts
from collabloop.llm_client import LLMClient
from collabloop.metrics import states_answer
from collabloop.policy import LazyPolicyEngine, PolicyEngine, SamplingSettings, derive_seed
from collabloop.records import Task
from collabloop.simulator import TERMINATION_SIGNAL, next_turn_request, parse_user_turn


@dataclass
class Rollout:
    """One future in progress."""

    task: Task
    salt: str
    history: list[dict]  # context + candidate + future so far
    future: list[dict] = field(default_factory=list)
    terminated: bool = False
    error: str | None = None
    too_long: bool = False  # ended because the next reply would not fit the policy's context length

    @property
    def live(self) -> bool:
        return not self.terminated and self.error is None and not self.too_long


def roll_out(
    rollouts: list[Rollout],
    window_turns: int,
    simulator: LLMClient,
    engine: PolicyEngine | LazyPolicyEngine,
    sampling: SamplingSettings,
    seed_parts: tuple,
    simulator_format: str,
    end_on_answer: bool = False,
) -> Counter:
    """Advance every rollout by up to `window_turns` exchanges, in place; returns counts.

    With `end_on_answer`, a conversation whose last assistant turn states a final answer ends there:
    the user takes the first answer, and no later turn can change what is scored.
    """
    counts: Counter = Counter()

    def end_answered() -> None:
        for r in rollouts:
            if end_on_answer and r.live and states_answer(r.task, r.history[-1], r.history[:-1]):
                r.terminated = True
                counts["conversations_ended_on_answer"] += 1

    starts = [len(r.history) for r in rollouts]
    for turn in range(window_turns):
        end_answered()
        live = [r for r in rollouts if r.live]
        if not live:
            break
        requests = [next_turn_request(r.task, r.history, f"{r.salt}/turn{turn}", simulator_format) for r in live]
        results = simulator.complete_many(requests, progress=f"user turn {turn + 1}/{window_turns}")
        for rollout, result in zip(live, results):
            if result.error:
                rollout.error = f"simulator failed at turn {turn + 1}: {result.error}"
                continue
            parsed = parse_user_turn(result.text, simulator_format)
            counts["simulator_format_fallbacks"] += int(not parsed.followed_format)
            user = {"role": "user", "content": parsed.message}
            rollout.history.append(user)
            rollout.future.append(user)
            rollout.terminated = parsed.terminated
        live = [r for r in rollouts if r.live]
        if not live:
            break
        replies = engine.chat(
            [r.history for r in live], sampling, n=1, batch_seed=derive_seed(*seed_parts, turn), progress=False
        )
        for rollout, reply in zip(live, replies):
            if reply is None:  # scored on the turns it had, as at the turn limit
                rollout.too_long = True
                counts["conversations_ended_too_long"] += 1
                continue
            assistant = {"role": "assistant", "content": reply[0]}
            rollout.history.append(assistant)
            rollout.future.append(assistant)
    else:
        end_answered()
    # What the simulated users did: revealed a withheld fact, ended the chat, or stated an invented number.
    for rollout, start in zip(rollouts, starts):
        counts.update(user_turn_counts(rollout.task.goal, rollout.history, start, TERMINATION_SIGNAL))
        # And what the policy did that it must not learn: write to the judge instead of the user.
        counts[grader_talk.COUNT] += grader_talk.count_addressing_grader(
            m["content"] for m in rollout.history[start:] if m["role"] == "assistant")
    return counts
