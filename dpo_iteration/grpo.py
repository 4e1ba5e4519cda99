"""Online GRPO with the multiturn-aware reward (TRL's GRPOTrainer).

The reward of each sampled reply is what annotate would give it: S futures of
w exchanges with the user simulator (turn-synchronous, all replies of a
generation batch at once), scored by the metrics and combined with their
weights. The policy being trained is not served, so a served model plays the
assistant inside the futures (`assistant_model`).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from collabloop.jsonl import read_records_with_tasks, write_records
from collabloop.llm_client import LLMClient, Request, cache_for, client_for, simulator_client
from collabloop.metrics import ScoringItem, combine, mean_or_none, metric_resources, score_items
from collabloop.records import Context
from collabloop.rollout import Rollout, roll_out
from collabloop.stage import ModelRun
from collabloop.stage_spec import StageSpec, llm_cache, output_of, own_output, policy, train_tasks
from collabloop.trainer_configs import GRPOArgs
from collabloop.training import copy_unchanged, load_tokenizer, partial_dir_for, train_and_publish

logger = logging.getLogger(__name__)


class ServedAssistant:
    """Plays the assistant in futures through a served model; the `PolicyEngine.chat` interface."""

    def __init__(self, client: LLMClient, counts: Counter):
        self.client = client
        self.counts = counts

    def chat(self, conversations, sampling, n, batch_seed, progress=False):
        requests = [Request(messages=c, salt=f"assistant/{batch_seed}/{i}") for i, c in enumerate(conversations)]
        results = self.client.complete_many(requests, progress="assistant turns" if progress else None)
        # A failed assistant turn leaves an empty reply in that future; it is counted, not hidden.
        self.counts["assistant_turns_failed"] += sum(1 for r in results if r.error)
        return [[r.text if not r.error else ""] for r in results]


class MultiturnReward:
    """GRPO reward function: one multiturn-aware reward per (prompt, sampled reply)."""

    __name__ = "multiturn_reward"  # TRL names the logged reward column after it

    def __init__(self, args: GRPOArgs, tasks: dict, cache_path: str, counts: Counter):
        cache = cache_for(args, cache_path)
        self.args = args
        self.tasks = tasks
        self.simulator = simulator_client(args, cache)
        assistant = client_for(args, cache, model=args.assistant_model, api_base=args.assistant_api_base,
                               temperature=args.simulator_temperature, max_tokens=args.assistant_max_tokens)
        self.assistant = ServedAssistant(assistant, counts)
        self.resources = metric_resources(args, cache, args.metric_weights)
        self.counts = counts
        self.calls = 0

    def __call__(self, prompts, completions, task_id, **kwargs) -> list[float | None]:
        self.calls += 1
        step = getattr(kwargs.get("trainer_state"), "global_step", self.calls)
        rollouts = [
            Rollout(task=self.tasks[t], salt=f"grpo/step{step}/{i}/future{s}", history=[*p, *c])
            for i, (p, c, t) in enumerate(zip(prompts, completions, task_id))
            for s in range(self.args.num_futures)
        ]
        self.counts.update(roll_out(rollouts, self.args.window_turns, self.simulator, self.assistant, None,
                                    (step,), self.args.simulator_format, self.args.end_on_answer))
        items = [ScoringItem(task=r.task, history=prompts[i // self.args.num_futures],
                             window=[*completions[i // self.args.num_futures], *r.future])
                 for i, r in enumerate(rollouts)]
        failures = [f"future failed: {r.error}" if r.error is not None else None for r in rollouts]
        self.counts["futures"] += len(rollouts)
        self.counts["futures_failed"] += sum(f is not None for f in failures)
        values = score_items(items, failures, self.args.metric_weights, self.resources)
        per_future = combine(values, self.args.metric_weights, self.args.term_cap)
        rewards = [mean_or_none(per_future[i * self.args.num_futures:(i + 1) * self.args.num_futures])
                   for i in range(len(prompts))]
        self.counts["replies_without_reward"] += sum(r is None for r in rewards)
        return rewards


def run(args: GRPOArgs, grpo_args) -> dict | None:
    output_dir = Path(grpo_args.output_dir)
    stage = ModelRun("grpo", output_dir, (args, grpo_args),
                     {"contexts": args.contexts_path, "tasks": args.tasks_path, "model": args.model_name_or_path},
                     code=("dpo_iteration.grpo", "collabloop.rollout", "collabloop.simulator", "collabloop.metrics",
                           "collabloop.judges", "collabloop.training"))
    if stage.up_to_date():
        return None
    contexts, tasks = read_records_with_tasks(args.contexts_path, Context, args.tasks_path)
    stage.counts["contexts"] = len(contexts)
    if not contexts:
        metrics = copy_unchanged(args.model_name_or_path, output_dir, stage, f"no contexts in {args.contexts_path}")
        return {"counts": dict(stage.counts), "metrics": metrics}

    from datasets import load_dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOTrainer

    rows_path = output_dir.with_name(output_dir.name + ".prompts.jsonl")
    write_records(rows_path, [{"prompt": c.prompt, "task_id": c.task_id} for c in contexts])
    grpo_args.output_dir = str(partial_dir_for(output_dir))
    tokenizer = load_tokenizer(args.model_name_or_path)
    model = AutoModelForCausalLM.from_pretrained(args.model_name_or_path)
    # The reward counts into the stage's counts (futures, failures), which the meta file keeps.
    reward = MultiturnReward(args, tasks, str(output_dir), stage.counts)
    dataset = load_dataset("json", data_files=str(rows_path), split="train")
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=grpo_args, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=args.peft_config())
    metrics = train_and_publish(trainer, tokenizer, output_dir, stage, args)
    return {"counts": dict(stage.counts), "metrics": metrics}


STAGE = StageSpec(
    "grpo", "dpo_iteration/train_grpo.py", GRPOArgs, "model", None, run,
    inputs={"contexts_path": output_of("contexts"), "tasks_path": train_tasks, "model_name_or_path": policy,
            "output_dir": own_output, "tokenizer": policy, "llm_cache_path": llm_cache},
    roles=("simulator", "judge", "assistant"),
    runs=lambda loop, iteration: iteration >= 1 and loop.algorithm == "grpo",  # the online algorithm of its name
)
