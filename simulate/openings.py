"""Contexts: the opening user turn of each task.

A task with `prompt` opens with it. Otherwise the user simulator writes the
opening message from the hidden goal.
"""

from __future__ import annotations

import logging

from collabloop.cli import cache_for, check_failures, simulator_client
from collabloop.jsonl import read_records
from collabloop.records import Context, Task
from collabloop.simulator import opening_request, parse_user_turn
from collabloop.stage import StageRun
from collabloop.stage_configs import ContextsConfig

logger = logging.getLogger(__name__)


def context_id(task: Task, turn: int = 0) -> str:
    return f"{task.id}/turn{turn}"


def run(cfg: ContextsConfig) -> dict | None:
    stage = StageRun("contexts", cfg.output_path, Context, (cfg,), inputs={"tasks": cfg.tasks_path})
    if stage.up_to_date():
        return None
    tasks = read_records(cfg.tasks_path, Task)
    if cfg.max_tasks is not None:
        tasks = tasks[: cfg.max_tasks]
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
        requests = [opening_request(t, salt=f"{t.id}/iter{cfg.iteration}/opening") for t in to_write]
        results = simulator.complete_many(requests, progress="opening turns")
        written = []
        for task, result in zip(to_write, results):
            message = parse_user_turn(result.text)[0] if not result.error else ""
            if result.error or not message:
                dropped.add(context_id(task))
                logger.warning("task %s: no opening message (%s)", task.id, result.error or "empty after cleaning")
                continue
            written.append(Context(id=context_id(task), task_id=task.id, prompt=[{"role": "user", "content": message}], turn=0))
        check_failures("opening messages", len(dropped), len(to_write), cfg.max_failure_fraction)
        stage.append(written)
        stage.counts["opening_from_simulator"] += len(written)
        stage.counts["dropped_simulator_failed"] += len(dropped)
        for key, value in simulator.stats.items():
            stage.counts[f"simulator_{key}"] = value
        cache.close()
    return stage.finish([context_id(t) for t in tasks if context_id(t) not in dropped])
