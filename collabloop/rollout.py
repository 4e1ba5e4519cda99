"""Conversations played on: the simulator plays the user, the policy the assistant.

`roll_out` advances a batch of conversations by up to a number of exchanges, on one of two schedules
(`simulation_schedule`): per conversation (collabloop/scheduler.py: each conversation's next turn goes to its
model as soon as its last one ends), or turn-synchronous (at every turn the user turns of all live conversations
go to the simulator together, then all assistant turns to the policy as one batch). Both apply the same rules to
every turn; the simulate and evaluate stages and the GRPO trainer's multi-turn reward use it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from collabloop import grader_talk
from collabloop.collaboration import user_turn_counts
from collabloop.llm_client import CallResult, LLMClient
from collabloop.metrics import states_answer
from collabloop.policy import LazyPolicyEngine, PolicyEngine, SamplingSettings, derive_seed
from collabloop.records import Task
from collabloop.scheduler import Scheduler
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


def resolve_schedule(schedule: str, engine, simulator: LLMClient | None) -> str:
    """The schedule `simulation_schedule` names: 'auto' is per_conversation where it keeps every rerun's text,
    with the policy and the simulator both vLLM engines in this process (no clock decides a batch), and
    turn_synchronous else: a remote simulator's answers arrive when the server sends them, and a served
    assistant (GRPO) takes batches only."""
    steppable = isinstance(engine, (PolicyEngine, LazyPolicyEngine))
    if schedule == "auto":
        local = simulator is not None and simulator.local is not None
        return "per_conversation" if steppable and local else "turn_synchronous"
    if schedule == "per_conversation" and not steppable:
        raise ValueError(f"simulation_schedule=per_conversation needs the policy as a vLLM engine in this process, "
                         f"not {type(engine).__name__}; use turn_synchronous or auto")
    return schedule


def roll_out(
    rollouts: list[Rollout],
    window_turns: int,
    simulator: LLMClient,
    engine,
    sampling: SamplingSettings,
    seed_parts: tuple,
    simulator_format: str,
    end_on_answer: bool = False,
    schedule: str = "turn_synchronous",
) -> Counter:
    """Advance every rollout by up to `window_turns` exchanges, in place; returns counts.

    With `end_on_answer`, a conversation whose last assistant turn states a final answer ends there:
    the user takes the first answer, and no later turn can change what is scored. `engine`: the policy, a
    `PolicyEngine` (or lazy one), or any object with its `chat` (a served assistant, turn_synchronous only).
    """
    turns = Turns(window_turns, simulator_format, end_on_answer)
    starts = [len(r.history) for r in rollouts]
    if resolve_schedule(schedule, engine, simulator) == "per_conversation":
        _per_conversation(rollouts, turns, simulator, engine, sampling, seed_parts)
    else:
        _turn_synchronous(rollouts, turns, simulator, engine, sampling, seed_parts)
    counts = turns.counts
    # What the simulated users did: revealed a withheld fact, ended the chat, or stated an invented number.
    for rollout, start in zip(rollouts, starts):
        counts.update(user_turn_counts(rollout.task.goal, rollout.history, start, TERMINATION_SIGNAL))
        # And what the policy did that it must not learn: write to the judge instead of the user.
        counts[grader_talk.COUNT] += grader_talk.count_addressing_grader(
            m["content"] for m in rollout.history[start:] if m["role"] == "assistant")
    return counts


@dataclass
class Turns:
    """The rules every schedule applies to each turn of each conversation, and their counts."""

    window_turns: int
    simulator_format: str
    end_on_answer: bool
    counts: Counter = field(default_factory=Counter)

    def wants_user_turn(self, rollout: Rollout, turn: int) -> bool:
        """Whether `rollout` goes on to the user's turn `turn` (0-based); ends it when its last answer stands."""
        if self.end_on_answer and rollout.live and states_answer(rollout.task, rollout.history[-1],
                                                                 rollout.history[:-1]):
            rollout.terminated = True
            self.counts["conversations_ended_on_answer"] += 1
        return rollout.live and turn < self.window_turns

    def user_request(self, rollout: Rollout, turn: int):
        return next_turn_request(rollout.task, rollout.history, f"{rollout.salt}/turn{turn}", self.simulator_format)

    def add_user_turn(self, rollout: Rollout, turn: int, result: CallResult) -> None:
        if result.error:
            rollout.error = f"simulator failed at turn {turn + 1}: {result.error}"
            return
        parsed = parse_user_turn(result.text, self.simulator_format)
        self.counts["simulator_format_fallbacks"] += int(not parsed.followed_format)
        user = {"role": "user", "content": parsed.message}
        rollout.history.append(user)
        rollout.future.append(user)
        rollout.terminated = parsed.terminated

    def add_assistant_turn(self, rollout: Rollout, reply: str | None) -> None:
        if reply is None:  # scored on the turns it had, as at the turn limit
            rollout.too_long = True
            self.counts["conversations_ended_too_long"] += 1
            return
        assistant = {"role": "assistant", "content": reply}
        rollout.history.append(assistant)
        rollout.future.append(assistant)


def _turn_synchronous(rollouts, turns: Turns, simulator: LLMClient, engine, sampling, seed_parts) -> None:
    for turn in range(turns.window_turns + 1):
        live = [r for r in rollouts if turns.wants_user_turn(r, turn)]
        if not live:
            return
        requests = [turns.user_request(r, turn) for r in live]
        results = simulator.complete_many(requests, progress=f"user turn {turn + 1}/{turns.window_turns}")
        for rollout, result in zip(live, results):
            turns.add_user_turn(rollout, turn, result)
        live = [r for r in live if r.live]
        if not live:
            return
        replies = engine.chat(
            [r.history for r in live], sampling, n=1, batch_seed=derive_seed(*seed_parts, turn), progress=False
        )
        for rollout, reply in zip(live, replies):
            turns.add_assistant_turn(rollout, None if reply is None else reply[0])


def _per_conversation(rollouts, turns: Turns, simulator: LLMClient, engine, sampling, seed_parts) -> None:
    scheduler = Scheduler(simulator, engine)

    def user_turn(rollout: Rollout, turn: int) -> None:
        if turns.wants_user_turn(rollout, turn):
            scheduler.ask_simulator(turns.user_request(rollout, turn), lambda result: user_answered(rollout, turn,
                                                                                                    result))

    def user_answered(rollout: Rollout, turn: int, result: CallResult) -> None:
        turns.add_user_turn(rollout, turn, result)
        if rollout.live:
            seed = derive_seed(*seed_parts, turn, rollout.salt)
            scheduler.ask_policy(rollout.history, sampling, seed, lambda reply: replied(rollout, turn, reply))

    def replied(rollout: Rollout, turn: int, reply: str | None) -> None:
        turns.add_assistant_turn(rollout, reply)
        user_turn(rollout, turn + 1)

    for rollout in rollouts:
        user_turn(rollout, 0)
    scheduler.run()
