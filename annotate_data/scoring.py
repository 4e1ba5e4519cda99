"""Score every future with the configured metrics; one multiturn-aware reward per candidate.

MR(candidate) = mean over its futures of sum_m clip(weight_m * metric_m(future)); each future's own
reward is kept too (`future_rewards`: the pairs stage can pair the policy's replies inside the futures).
A future whose simulation failed, or for which a metric has no value (a
failed judge call), is excluded from the mean and its error is kept in the
record; a candidate with no scorable future gets reward null.
"""

from __future__ import annotations

import logging

from collabloop.cli import check_failures
from collabloop.jsonl import read_records_with_tasks
from collabloop.llm_client import cache_for
from collabloop.metrics import (
    MetricResources,
    ScoringItem,
    combine,
    mean_or_none,
    metric_resources,
    needs_sandbox,
    score_items,
    uses_judge,
)
from collabloop.policy import forget_prefixes
from collabloop.records import Generation, Rewarded, Simulation, Task
from collabloop.stage import StageRun
from collabloop.stage_configs import AnnotateConfig
from collabloop.stage_spec import StageSpec, Where, llm_cache, offline_training, own_output, policy, train_tasks

logger = logging.getLogger(__name__)


def score_records(
    records: list[Simulation], tasks: dict[str, Task], cfg: AnnotateConfig, resources: MetricResources
) -> list[Rewarded]:
    """Score a batch of simulation records; metrics run once over the whole batch."""
    index, items = [], []
    for r, rec in enumerate(records):
        for k, response in enumerate(rec.responses):
            for s, future in enumerate(rec.futures[k]):
                index.append((r, k, s, future["error"]))
                window = [{"role": "assistant", "content": response}, *future["messages"]]
                items.append(ScoringItem(task=tasks[rec.task_id], history=rec.prompt, window=window))
    failures = [f"future failed: {err}" if err is not None else None for _, _, _, err in index]
    values = score_items(items, failures, cfg.metric_weights, resources)
    per_future = combine(values, cfg.metric_weights, cfg.term_cap)

    out = []
    for r, rec in enumerate(records):
        metrics, rewards, future_rewards = [], [], []
        for k in range(len(rec.responses)):
            positions = [i for i, (rr, kk, _, _) in enumerate(index) if rr == r and kk == k]
            metrics.append(
                {
                    name: {
                        "mean": mean_or_none([values[name][i].value for i in positions]),
                        "values": [values[name][i].value for i in positions],
                        "errors": [values[name][i].error for i in positions],
                    }
                    for name in cfg.metric_weights
                }
            )
            future_rewards.append([per_future[i] for i in positions])
            rewards.append(mean_or_none(future_rewards[-1]))
        out.append(Rewarded(**rec.to_dict(), metrics=metrics, rewards=rewards, future_rewards=future_rewards))
    return out


def without_futures(generation: Generation) -> Simulation:
    """A generation as a simulation whose candidates each have one empty future: the candidate alone is scored."""
    futures = [[{"messages": [], "terminated": False, "error": None}] for _ in generation.responses]
    return Simulation(**generation.to_dict(), futures=futures)


def run(cfg: AnnotateConfig) -> dict | None:
    stage = StageRun(
        "annotate", cfg.output_path, Rewarded, (cfg,),
        inputs={"simulations": cfg.simulations_path, "tasks": cfg.tasks_path,
                **({"reward_model": cfg.reward_model} if cfg.reward_model else {})},
        code=("annotate_data.scoring", "collabloop.metrics", "collabloop.judges", "collabloop.reward_model"),
    )
    if stage.up_to_date():
        return None
    if needs_sandbox(cfg.metric_weights):
        from collabloop.sandbox import check_available

        check_available()  # before any work: code is never run unsandboxed
    if cfg.without_futures:
        generations, tasks = read_records_with_tasks(cfg.simulations_path, Generation, cfg.tasks_path)
        records = [without_futures(g) for g in generations]
    else:
        records, tasks = read_records_with_tasks(cfg.simulations_path, Simulation, cfg.tasks_path)
    done, todo = stage.begin_chunks(records, cfg.batch_size)
    if todo:
        from tqdm.auto import tqdm

        from collabloop.console import progress_stream

        # The LLM cache only for a judge: metrics that call none leave no cache file behind.
        cache = cache_for(cfg, cfg.output_path) if uses_judge(cfg.metric_weights) else None
        resources = metric_resources(cfg, cache, cfg.metric_weights)
        judge, reward_model = resources.judge, resources.reward_model
        for _, chunk in tqdm(todo, desc="annotate batches", file=progress_stream()):
            forget_prefixes()
            scored = score_records(chunk, tasks, cfg, resources)
            judged = [
                e for rec in scored for per in rec.metrics for m in per.values() for e in m["errors"]
                if e is not None and not e.startswith("future failed")
            ]
            total = sum(len(m["errors"]) for rec in scored for per in rec.metrics for m in per.values())
            check_failures("annotate batch", len(judged), total, cfg.max_failure_fraction)
            new = [r for r in scored if r.id not in done]
            stage.append(new)
            stage.counts["metric_values_failed"] += len(judged)
            stage.counts["candidates"] += sum(len(r.rewards) for r in new)
            stage.counts["candidates_without_reward"] += sum(1 for r in new for x in r.rewards if x is None)
        if judge is not None:
            for key, value in judge.stats.items():
                stage.counts[f"judge_{key}"] = value
        if reward_model is not None:
            stage.counts["reward_model_texts_truncated"] += reward_model.texts_truncated
        if cache is not None:
            cache.close()
    return stage.finish([r.id for r in records])


def scored_file(w: Where) -> str:
    """The simulated futures (CollabLLM's multiturn-aware reward); without simulation, the candidates alone."""
    return str(w.output("simulate" if w.loop.use_simulation else "generate"))


def scored_alone(w: Where) -> str:
    return "false" if w.loop.use_simulation else "true"


STAGE = StageSpec(
    "annotate", "annotate_data/annotate.py", AnnotateConfig, "rewards.jsonl", "rewards", run,
    inputs={"tokenizer": policy, "tasks_path": train_tasks, "simulations_path": scored_file,
            "without_futures": scored_alone, "output_path": own_output, "llm_cache_path": llm_cache},
    roles=("judge",), per_record=True, runs=offline_training,
)
