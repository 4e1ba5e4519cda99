"""Contexts: the opening user turn of each task, and continued conversations.

A task with `prompt` opens with it. Otherwise the user simulator writes the
opening message from the hidden goal. With `continue_from` (the previous
iteration's rewards), each conversation also goes on as CollabLLM builds its
data: its best candidate becomes the assistant's turn, and the next user turn
is the first user message of that candidate's longest simulated future.
"""

from __future__ import annotations

import logging

from collabloop.cli import check_failures
from collabloop.jsonl import read_records, read_tasks
from collabloop.llm_client import cache_for, simulator_client
from collabloop.records import Context, Rewarded, Task
from collabloop.rewards import best_candidate
from collabloop.simulator import TERMINATION_SIGNAL, opening_request, parse_user_turn
from collabloop.stage import StageRun
from collabloop.stage_configs import ContextsConfig
from collabloop.stage_spec import StageSpec, Where, iteration, llm_cache, own_output

logger = logging.getLogger(__name__)


def context_id(task: Task, turn: int = 0) -> str:
    return f"{task.id}/turn{turn}"


def continue_conversation(record: Rewarded, max_turns: int) -> tuple[Context | None, str]:
    """The next context of a scored conversation, or None and the reason it ends here."""
    best = best_candidate(record.rewards)
    if best is None:
        return None, "no_scored_candidate"
    futures = [
        f for f in record.futures[best]
        if f["error"] is None and f["messages"] and f["messages"][0]["role"] == "user"
    ]
    if not futures:
        return None, "no_simulated_user_turn"
    longest = max(futures, key=lambda f: len(f["messages"]))  # first of the longest: stable
    user = longest["messages"][0]
    if TERMINATION_SIGNAL in user["content"] or not user["content"].strip():
        return None, "user_ended_conversation"
    turn = record.turn + 1
    if turn >= max_turns:
        return None, "turn_limit"
    prompt = [*record.prompt, {"role": "assistant", "content": record.responses[best]}, user]
    return Context(id=f"{record.task_id}/turn{turn}", task_id=record.task_id, prompt=prompt, turn=turn), "continued"


def tasks_of(tasks: list[Task], cfg: ContextsConfig) -> list[Task]:
    """The tasks this iteration opens: the first max_tasks, then this iteration's slice of tasks_per_iteration."""
    if cfg.max_tasks is not None:
        tasks = tasks[: cfg.max_tasks]
    n = cfg.tasks_per_iteration
    if n is None or cfg.iteration == 0 or n >= len(tasks):
        return tasks
    start = (cfg.iteration - 1) * n % len(tasks)
    return (tasks + tasks)[start:start + n]


def run(cfg: ContextsConfig) -> dict | None:
    inputs = {"tasks": cfg.tasks_path}
    if cfg.continue_from:
        inputs["continue_from"] = cfg.continue_from
    stage = StageRun("contexts", cfg.output_path, Context, (cfg,), inputs=inputs,
                     code=("simulate.openings", "collabloop.simulator", "collabloop.rewards"))
    if stage.up_to_date():
        return None
    tasks = tasks_of(read_tasks(cfg.tasks_path), cfg)
    done = stage.begin()
    stage.counts["records_in"] = len(tasks)
    stage.counts["resumed"] = len(done)
    todo = [t for t in tasks if context_id(t) not in done]
    given = [t for t in todo if t.prompt]
    to_write = [t for t in todo if not t.prompt]
    stage.append([Context(id=context_id(t), task_id=t.id, prompt=t.prompt, turn=0) for t in given])
    stage.counts["opening_from_task"] += len(given)
    dropped: set[str] = set()
    if to_write:
        cache = cache_for(cfg, cfg.output_path)
        simulator = simulator_client(cfg, cache)
        # Under a budget, one wave of concurrent calls at a time, each appended when it ends: a stop at the
        # budget keeps the openings already written. Without one, a single batch (the local engine's best).
        wave = cfg.llm_max_concurrency if cfg.max_cost_usd is not None else len(to_write)
        for start in range(0, len(to_write), wave):
            chunk = to_write[start:start + wave]
            requests = [opening_request(t, f"{t.id}/iter{cfg.iteration}/opening", cfg.simulator_format)
                        for t in chunk]
            written = []
            for task, result in zip(chunk, simulator.complete_many(requests, progress="opening turns")):
                turn = parse_user_turn(result.text, cfg.simulator_format) if not result.error else None
                stage.counts["simulator_format_fallbacks"] += int(turn is not None and not turn.followed_format)
                message = turn.message if turn is not None else ""
                if result.error or not message:
                    dropped.add(context_id(task))
                    logger.warning("task %s: no opening message (%s)", task.id, result.error or "empty after cleaning")
                    continue
                written.append(Context(id=context_id(task), task_id=task.id,
                                       prompt=[{"role": "user", "content": message}], turn=0))
            stage.append(written)
            stage.counts["opening_from_simulator"] += len(written)
        check_failures("opening messages", len(dropped), len(to_write), cfg.max_failure_fraction)
        stage.counts["dropped_simulator_failed"] += len(dropped)
        for key, value in simulator.stats.items():
            stage.counts[f"simulator_{key}"] = value
        cache.close()
    order = [context_id(t) for t in tasks if context_id(t) not in dropped]
    if cfg.continue_from:
        continued = []
        for record in read_records(cfg.continue_from, Rewarded):
            context, reason = continue_conversation(record, cfg.max_turns)
            stage.counts[f"conversations_{reason}"] += 1
            if context is not None:
                continued.append(context)
        stage.append([c for c in continued if c.id not in done])
        order += [c.id for c in continued]
    return stage.finish(order)


def tasks_of_iteration(w: Where) -> str:
    """Iteration 0 opens the held-out tasks (the openings every model is evaluated on); the others train."""
    return w.loop.eval_tasks if w.iteration == 0 else w.loop.train_tasks


def previous_conversations(w: Where) -> str:
    """From iteration 2 on, the previous iteration's rewards, whose conversations go on (multi-turn data);
    "" where there are none: iterations 0 and 1, loop.continue_conversations false, or an online algorithm
    (it makes no candidates to continue)."""
    if w.iteration <= 1 or not w.loop.continue_conversations or w.loop.online:
        return ""
    return str(w.output("annotate", w.iteration - 1))


STAGE = StageSpec(
    "contexts", "simulate/make_contexts.py", ContextsConfig, "contexts.jsonl", "contexts", run,
    inputs={"tasks_path": tasks_of_iteration, "iteration": iteration, "output_path": own_output,
            "llm_cache_path": llm_cache, "continue_from": previous_conversations},
    roles=("simulator",),
    runs=lambda loop, iteration: iteration >= 1 or bool(loop.eval_tasks),  # iteration 0: the held-out openings
)
