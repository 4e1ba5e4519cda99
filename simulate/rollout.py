"""Futures after each candidate: the simulator plays the user, the policy the assistant.

Turn-synchronous batching: at every turn the user turns of all live
conversations go to the simulator concurrently, then all assistant turns go
to the vLLM engine as one batch.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from collabloop.cli import cache_for, check_failures, simulator_client
from collabloop.jsonl import read_records_with_tasks
from collabloop.llm_client import LLMClient
from collabloop.metrics import states_answer
from collabloop.policy import LazyPolicyEngine, PolicyEngine, SamplingSettings, derive_seed, policy_engine
from collabloop.records import Generation, Simulation, Task
from collabloop.simulator import next_turn_request, parse_user_turn
from collabloop.stage import StageRun
from collabloop.stage_configs import SimulateConfig

logger = logging.getLogger(__name__)


@dataclass
class Rollout:
    """One future in progress."""

    task: Task
    salt: str
    history: list[dict]  # context + candidate + future so far
    future: list[dict] = field(default_factory=list)
    terminated: bool = False
    error: str | None = None

    @property
    def live(self) -> bool:
        return not self.terminated and self.error is None


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
            if end_on_answer and r.live and states_answer(r.task, r.history[-1]):
                r.terminated = True
                counts["conversations_ended_on_answer"] += 1

    for turn in range(window_turns):
        end_answered()
        live = [r for r in rollouts if r.live]
        if not live:
            return counts
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
            return counts
        replies = engine.chat(
            [r.history for r in live], sampling, n=1, batch_seed=derive_seed(*seed_parts, turn), progress=False
        )
        for rollout, reply in zip(live, replies):
            assistant = {"role": "assistant", "content": reply[0]}
            rollout.history.append(assistant)
            rollout.future.append(assistant)
    end_answered()
    return counts


def run(cfg: SimulateConfig) -> dict | None:
    stage = StageRun(
        "simulate", cfg.output_path, Simulation, (cfg,),
        inputs={"generations": cfg.generations_path, "tasks": cfg.tasks_path, "model": cfg.model},
        code=("simulate.rollout", "collabloop.simulator", "collabloop.policy", "collabloop.metrics"),
    )
    if stage.up_to_date():
        return None
    records, tasks = read_records_with_tasks(cfg.generations_path, Generation, cfg.tasks_path)
    done, todo_chunks = stage.begin_chunks(records, cfg.batch_size)
    if todo_chunks:
        cache = cache_for(cfg, cfg.output_path)
        simulator = simulator_client(cfg, cache)
        engine = policy_engine(cfg, lazy=True)  # the simulator speaks first: a dead one fails before it starts
        sampling = SamplingSettings(cfg.temperature, cfg.top_p, cfg.max_new_tokens)
        from tqdm.auto import tqdm

        from collabloop.console import progress_stream

        for chunk_index, chunk in tqdm(todo_chunks, desc="simulate batches", file=progress_stream()):
            rollouts = {
                (rec.id, k, s): Rollout(
                    task=tasks[rec.task_id],
                    salt=f"{rec.id}/cand{k}/future{s}",
                    history=[*rec.prompt, {"role": "assistant", "content": response}],
                )
                for rec in chunk
                for k, response in enumerate(rec.responses)
                for s in range(cfg.num_futures)
            }
            turn_counts = roll_out(list(rollouts.values()), cfg.window_turns, simulator, engine, sampling,
                                   (cfg.seed, chunk_index), cfg.simulator_format, cfg.end_on_answer)
            failed = sum(1 for r in rollouts.values() if r.error)
            # Checked before appending, so a rerun redoes this batch once the simulator works again.
            check_failures(f"simulate batch {chunk_index}", failed, len(rollouts), cfg.max_failure_fraction)
            new = []
            for rec in chunk:
                if rec.id in done:
                    continue
                futures = [
                    [
                        {
                            "messages": (r := rollouts[(rec.id, k, s)]).future,
                            "terminated": r.terminated,
                            "error": r.error,
                        }
                        for s in range(cfg.num_futures)
                    ]
                    for k in range(len(rec.responses))
                ]
                new.append(Simulation(**rec.to_dict(), futures=futures))
                stage.counts["futures"] += sum(len(f) for f in futures)
                stage.counts["futures_failed"] += sum(1 for per in futures for f in per if f["error"])
                stage.counts["futures_terminated"] += sum(1 for per in futures for f in per if f["terminated"])
            stage.append(new)
            stage.counts.update(turn_counts)
        for key, value in simulator.stats.items():
            stage.counts[f"simulator_{key}"] = value
        cache.close()
    return stage.finish([r.id for r in records])
