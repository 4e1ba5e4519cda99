"""Full conversations for evaluation: from the opening user turn to termination or a turn limit.

The policy answers the opening, then the simulator and the policy take turns
with the same turn-synchronous batching as the futures (`roll_out`). Each
finished conversation is scored with the configured metrics, and the summary
holds every metric's mean with a seeded bootstrap interval.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from collabloop import grader_talk
from collabloop.cli import check_failures
from collabloop.jsonl import read_records, read_records_with_tasks, write_json
from collabloop.llm_client import LLMClient, cache_for, simulator_client
from collabloop.metrics import MetricResources, ScoringItem, metric_resources, needs_sandbox, score_items
from collabloop.policy import PolicyEngine, SamplingSettings, derive_seed, forget_prefixes, policy_engine
from collabloop.records import Context, EvalConversation
from collabloop.rollout import Rollout, roll_out
from collabloop.stage import StageRun
from collabloop.stage_configs import EvaluateConfig
from collabloop.stage_spec import (
    StageSpec,
    Where,
    eval_contexts,
    eval_tasks,
    initial_model,
    iteration,
    llm_cache,
    own_output_folder,
    with_held_out_tasks,
)
from collabloop.stats import bootstrap_ci

logger = logging.getLogger(__name__)

TURNS = "turns"


def converse(
    rollouts: list[Rollout],
    max_turns: int,
    simulator: LLMClient,
    engine: PolicyEngine,
    sampling: SamplingSettings,
    seed_parts: tuple,
    simulator_format: str,
    end_on_answer: bool = False,
    schedule: str = "turn_synchronous",
):
    """Play every rollout (its history ends with the user's opening) to the end, in place; returns counts.

    The policy answers first; then up to `max_turns - 1` more exchanges, ending
    early when the simulated user sends the termination signal.
    """
    openings = engine.chat(
        [r.history for r in rollouts], sampling, n=1, batch_seed=derive_seed(*seed_parts, "opening"), progress=False
    )
    for rollout, reply in zip(rollouts, openings):
        if reply is None:  # nothing to score: a failed conversation, counted and excluded from the means
            rollout.error = (f"the opening leaves fewer than max_new_tokens={sampling.max_new_tokens} tokens of the "
                             f"policy's max_model_len={engine.max_model_len}")
            continue
        message = {"role": "assistant", "content": reply[0]}
        rollout.history.append(message)
        rollout.future.append(message)
    counts = roll_out(rollouts, max_turns - 1, simulator, engine, sampling, seed_parts, simulator_format, end_on_answer,
                      schedule)
    counts[grader_talk.COUNT] += grader_talk.count_addressing_grader(reply[0] for reply in openings if reply)
    counts["openings_too_long"] += sum(1 for reply in openings if reply is None)
    return counts


def sample_contexts(contexts: list[Context], num_samples: int) -> list[Context]:
    """Each opening `num_samples` times, as <context id>/sample<j> (unchanged ids for one sample)."""
    if num_samples == 1:
        return contexts
    return [replace(c, id=f"{c.id}/sample{j}") for c in contexts for j in range(num_samples)]


def score_conversations(
    contexts: list[Context], rollouts: list[Rollout], metric_names: list[str], resources: MetricResources
) -> list[EvalConversation]:
    """Score finished conversations; a conversation whose simulation failed gets no metric values."""
    items = [ScoringItem(task=r.task, history=c.prompt, window=r.future) for c, r in zip(contexts, rollouts)]
    failures = [f"conversation failed: {r.error}" if r.error is not None else None for r in rollouts]
    values = score_items(items, failures, metric_names, resources)
    out = []
    for i, (context, rollout) in enumerate(zip(contexts, rollouts)):
        metrics: dict[str, float | None] = {name: values[name][i].value for name in metric_names}
        errors = {name: values[name][i].error for name in metric_names if values[name][i].error}
        metrics[TURNS] = float(sum(1 for m in rollout.future if m["role"] == "assistant"))
        out.append(
            EvalConversation(
                id=context.id, task_id=context.task_id, messages=[*context.prompt, *rollout.future],
                terminated=rollout.terminated, error=rollout.error, metrics=metrics, metric_errors=errors,
            )
        )
    return out


def summarize(records: list[EvalConversation], cfg: EvaluateConfig) -> dict:
    """Every metric's mean and bootstrap interval over the conversations that have a value."""
    metrics = {}
    for name in [*cfg.metrics, TURNS]:
        values = [r.metrics.get(name) for r in records]
        present = [v for v in values if v is not None]
        metrics[name] = {
            **bootstrap_ci(present, cfg.confidence, cfg.bootstrap_samples, seed=cfg.seed),
            "failed": len(values) - len(present),
        }
    return {
        "iteration": cfg.iteration,
        "model": cfg.model,
        "tasks_path": cfg.tasks_path,
        "num_conversations": len(records),
        "terminated": sum(r.terminated for r in records),
        "confidence": cfg.confidence,
        "bootstrap_samples": cfg.bootstrap_samples,
        "seed": cfg.seed,
        "metrics": metrics,
    }


def run(cfg: EvaluateConfig) -> dict | None:
    output_dir = Path(cfg.output_dir)
    conversations_path = output_dir / "conversations.jsonl"
    summary_path = output_dir / "summary.json"
    stage = StageRun(
        "evaluate", conversations_path, EvalConversation, (cfg,),
        inputs={"contexts": cfg.contexts_path, "tasks": cfg.tasks_path, "model": cfg.model,
                **({"reward_model": cfg.reward_model} if cfg.reward_model else {})},
        code=("simulate.conversations", "collabloop.rollout", "collabloop.simulator", "collabloop.policy",
              "collabloop.metrics", "collabloop.judges", "collabloop.reward_model"),
    )
    if stage.up_to_date():
        # Killed between the conversations and the summary, or shards merged (a shard writes no summary).
        if stage.num_shards == 1 and not summary_path.exists():
            write_json(summary_path, summarize(read_records(conversations_path, EvalConversation), cfg))
        return None
    if needs_sandbox(cfg.metrics):
        from collabloop.sandbox import check_available

        check_available()
    contexts, tasks = read_records_with_tasks(cfg.contexts_path, Context, cfg.tasks_path)
    contexts = sample_contexts(contexts, cfg.num_samples)
    done, todo = stage.begin_chunks(contexts, cfg.batch_size)
    if todo:
        from tqdm.auto import tqdm

        from collabloop.console import progress_stream

        cache = cache_for(cfg, str(conversations_path))
        simulator = simulator_client(cfg, cache)
        resources = metric_resources(cfg, cache, cfg.metrics)
        engine = policy_engine(cfg)
        sampling = SamplingSettings(cfg.temperature, cfg.top_p, cfg.max_new_tokens)
        for chunk_index, chunk in tqdm(todo, desc="evaluate batches", file=progress_stream()):
            forget_prefixes()
            rollouts = [
                Rollout(task=tasks[c.task_id], salt=f"eval/{c.id}", history=[dict(m) for m in c.prompt]) for c in chunk
            ]
            turn_counts = converse(rollouts, cfg.max_turns, simulator, engine, sampling,
                                   (cfg.seed, "eval", chunk_index), cfg.simulator_format, cfg.end_on_answer,
                                   cfg.simulation_schedule)
            failed = sum(1 for r in rollouts if r.error)
            check_failures(f"evaluate batch {chunk_index}", failed, len(rollouts), cfg.max_failure_fraction)
            scored = [r for r in score_conversations(chunk, rollouts, cfg.metrics, resources) if r.id not in done]
            metric_failures = sum(len(r.metric_errors) for r in scored if r.error is None)
            check_failures(f"evaluate batch {chunk_index} metrics", metric_failures,
                           len(scored) * len(cfg.metrics), cfg.max_failure_fraction)
            stage.append(scored)
            stage.counts.update(turn_counts)
            stage.counts["conversations_failed"] += sum(1 for r in scored if r.error)
            stage.counts["conversations_terminated"] += sum(1 for r in scored if r.terminated)
            stage.counts["metric_values_failed"] += metric_failures
        for name, client in (("simulator", simulator), ("judge", resources.judge)):
            for key in ("calls", "cache_hits", "failures"):
                stage.counts[f"{name}_{key}"] = client.stats[key] if client is not None else 0
            stage.counts[f"{name}_cost_usd"] = round(client.cost_usd, 6) if client is not None else 0.0
        cache.close()
    result = stage.finish([c.id for c in contexts])
    if stage.num_shards == 1:
        write_json(summary_path, summarize(read_records(conversations_path, EvalConversation), cfg))
    return result


def evaluated_model(w: Where) -> str:
    """Iteration 0 evaluates the initial model; iteration i the model it trained."""
    return w.loop.initial_model if w.iteration == 0 else str(w.output("train"))


STAGE = StageSpec(
    "evaluate", "simulate/evaluate.py", EvaluateConfig, "eval/conversations.jsonl", "evaluation", run,
    # One tokenizer for every iteration: token counts compare across models.
    inputs={"model": evaluated_model, "iteration": iteration, "tasks_path": eval_tasks,
            "contexts_path": eval_contexts, "output_dir": own_output_folder, "tokenizer": initial_model,
            "llm_cache_path": llm_cache},
    roles=("simulator", "judge"), per_record=True, runs=with_held_out_tasks,
)
