"""The simulate stage: futures after each candidate, played by `collabloop.rollout.roll_out`."""

from __future__ import annotations

import logging

from collabloop.cli import check_failures
from collabloop.jsonl import read_records_with_tasks
from collabloop.llm_client import cache_for, simulator_client
from collabloop.policy import SamplingSettings, forget_prefixes, policy_engine
from collabloop.records import Generation, Simulation
from collabloop.rollout import Rollout, roll_out
from collabloop.stage import StageRun
from collabloop.stage_configs import SimulateConfig
from collabloop.stage_spec import StageSpec, llm_cache, offline_training, output_of, own_output, policy, train_tasks

logger = logging.getLogger(__name__)


def run(cfg: SimulateConfig) -> dict | None:
    stage = StageRun(
        "simulate", cfg.output_path, Simulation, (cfg,),
        inputs={"generations": cfg.generations_path, "tasks": cfg.tasks_path, "model": cfg.model},
        code=("simulate.futures", "collabloop.rollout", "collabloop.simulator", "collabloop.policy",
              "collabloop.metrics", "collabloop.judges"),
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
            forget_prefixes()
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
                                   (cfg.seed, chunk_index), cfg.simulator_format, cfg.end_on_answer,
                                   cfg.simulation_schedule)
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


STAGE = StageSpec(
    "simulate", "simulate/simulate_futures.py", SimulateConfig, "simulations.jsonl", "simulations", run,
    inputs={"model": policy, "tasks_path": train_tasks, "generations_path": output_of("generate"),
            "output_path": own_output, "llm_cache_path": llm_cache},
    roles=("simulator",), per_record=True,
    runs=lambda loop, iteration: offline_training(loop, iteration) and loop.use_simulation,
)
