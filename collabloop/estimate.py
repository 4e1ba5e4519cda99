"""What a run will cost before it starts: calls and tokens by role, and USD from litellm's price table.

    python -m collabloop.loop estimate --config configs/collabllm_docs.yaml

Per iteration and in total: policy samples, simulator calls, judge calls, prompt and completion tokens
of each role, and the cost of the roles played by API models (litellm's own table, read offline; local
engines and servers cost nothing). It is an upper bound by design: every reply runs to its token limit,
no conversation ends early, and nothing is found in the LLM cache. The assumptions are printed with it.
Where the run folder already holds an iteration's finished stages, their measured call counts replace
the estimated ones.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from collabloop.config import parse_config
from collabloop.judges import INTERACTIVITY_PROMPT
from collabloop.loop_config import LoopConfig
from collabloop.metrics import METRICS
from collabloop.pipeline import output_path, record_stages
from collabloop.simulator import FORMAT_INSTRUCTIONS, OPENING_INSTRUCTION, SYSTEM_PROMPT
from collabloop.stage import meta_path_for, read_meta
from collabloop.stage_configs import EvaluateConfig, SimulateConfig
from collabloop.task_kinds import TaskKind, kind_scored_by

ROLES = ("policy", "simulator", "judge")

# A task set that is not on this machine yet (a recipe's placeholder path) is assumed to hold this many
# training tasks (CollabLLM trained on 500 conversations per task, its Table 5) with openings of this many
# tokens; held-out tasks and goal sizes are the task kind's own (`TaskKind.assumed_eval_tasks`,
# `assumed_goal_tokens`).
ASSUMED_TRAIN_TASKS = 500
ASSUMED_OPENING_TOKENS = 60


@dataclass
class Use:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    measured: bool = False  # the calls are a finished stage's count (tokens a call stay estimated)

    def add(self, calls: int, prompt_tokens: float, completion_tokens: float) -> None:
        self.calls += calls
        self.prompt_tokens += round(calls * prompt_tokens)
        self.completion_tokens += round(calls * completion_tokens)


@dataclass
class StageUse:
    stage: str
    uses: dict[str, Use] = field(default_factory=lambda: {role: Use() for role in ROLES})


def tokens(text: str) -> float:
    """Tokens in `text`: about 4 characters a token in English for the BPE tokenizers of these models."""
    return len(text) / 4


@dataclass
class TaskSet:
    count: int
    goal_tokens: float
    opening_tokens: float
    without_opening: int  # tasks whose opening the simulator writes
    assumed: bool


def task_set(path: str, max_tasks: int | None, kind: TaskKind, split: str) -> TaskSet:
    if path and Path(path).is_file():
        from collabloop.jsonl import read_tasks

        tasks = read_tasks(path)[:max_tasks]
        openings = [t for t in tasks if t.prompt]
        return TaskSet(
            len(tasks), sum(tokens(t.goal) for t in tasks) / len(tasks),
            sum(tokens(m["content"]) for t in openings for m in t.prompt) / max(1, len(openings)),
            len(tasks) - len(openings), assumed=False,
        )
    assumed = ASSUMED_TRAIN_TASKS if split == "train" else kind.assumed_eval_tasks
    count = min(assumed, max_tasks or assumed)
    return TaskSet(count, kind.assumed_goal_tokens, ASSUMED_OPENING_TOKENS, 0, True)


def _simulator_prompt(goal_tokens: float, fmt: str) -> float:
    return tokens(SYSTEM_PROMPT + FORMAT_INSTRUCTIONS[fmt]) + goal_tokens


def _judge_prompts(metrics, goal_tokens: float, cfg) -> list[tuple[float, int]]:
    """Per judge call of a scored conversation: the fixed part of its prompt (the conversation itself is
    added), and the most tokens it writes (`cfg`: a JudgeArgs config), as each metric declares them."""
    out = []
    for name in metrics:
        metric = METRICS.get(name)
        if metric is None or not metric.uses_judge:
            continue
        fixed = tokens(metric.judge_prompt or INTERACTIVITY_PROMPT) + (goal_tokens if metric.judge_reads_goal else 0)
        out.append((fixed, cfg.judge_reasoning_max_tokens if metric.judge_reasons else cfg.judge_max_tokens))
    return out


def play(use: StageUse, conversations: int, history: float, turns: int, policy_first: bool,
         sim: SimulateConfig | EvaluateConfig, policy_tokens: int, goal_tokens: float) -> float:
    """Add `turns` exchanges of `conversations` conversations; returns the length of one at the end."""
    system = _simulator_prompt(goal_tokens, sim.simulator_format)
    for turn in range(turns):
        if not (policy_first and turn == 0):
            use.uses["simulator"].add(conversations, system + history, sim.simulator_max_tokens)
            history += sim.simulator_max_tokens
        use.uses["policy"].add(conversations, history, policy_tokens)
        history += policy_tokens
    return history


def iteration_uses(i: int, loop: LoopConfig, sections: dict, tasks: TaskSet, evals: TaskSet | None) -> list[StageUse]:
    ctx, gen, sim, ann, ev = (sections[k] for k in ("contexts", "generate", "simulate", "annotate", "evaluate"))
    stages = []
    if i > 0:
        contexts = StageUse("contexts")
        if tasks.without_opening:
            contexts.uses["simulator"].add(tasks.without_opening,
                                           _simulator_prompt(tasks.goal_tokens, ctx.simulator_format)
                                           + tokens(OPENING_INSTRUCTION), ctx.simulator_max_tokens)
        stages.append(contexts)
        # From iteration 2 on, each conversation is also continued by one exchange with its best candidate.
        continued = i > 1 and loop.continue_conversations
        groups = [(tasks.count, tasks.opening_tokens)]
        if continued:
            groups.append((tasks.count, tasks.opening_tokens + gen.max_new_tokens + sim.simulator_max_tokens))
        generate, simulate, annotate = StageUse("generate"), StageUse("simulate"), StageUse("annotate")
        judged = _judge_prompts(ann.metric_weights, tasks.goal_tokens, ann)
        for count, history in groups:
            candidates = count * gen.num_candidates
            generate.uses["policy"].add(candidates, history, gen.max_new_tokens)
            if loop.use_simulation:
                futures = candidates * sim.num_futures
                end = play(simulate, futures, history + gen.max_new_tokens, sim.window_turns, False, sim,
                           sim.max_new_tokens, tasks.goal_tokens)
                for fixed, written in judged:
                    annotate.uses["judge"].add(futures, fixed + end, written)
            else:
                for fixed, written in judged:
                    annotate.uses["judge"].add(candidates, fixed + history + gen.max_new_tokens, written)
        stages += [generate, simulate, annotate] if loop.use_simulation else [generate, annotate]
    if evals is not None:
        evaluate = StageUse("evaluate")
        conversations = evals.count * ev.num_samples
        end = play(evaluate, conversations, evals.opening_tokens, ev.max_turns, True, ev, ev.max_new_tokens,
                   evals.goal_tokens)
        for fixed, written in _judge_prompts(ev.metrics, evals.goal_tokens, ev):
            evaluate.uses["judge"].add(conversations, fixed + end, written)
        stages.append(evaluate)
    return stages


# What a stage's meta counts, per role, as calls made (cache hits included: a fresh run pays for them).
MEASURED = {"simulator": ("simulator_calls", "simulator_cache_hits"), "judge": ("judge_calls", "judge_cache_hits")}


def use_measured(stage: StageUse, output: Path) -> None:
    """Replace the estimated call counts with a finished stage's own, keeping tokens per call."""
    meta = read_meta(meta_path_for(output))
    if meta is None or meta.get("status") != "complete":
        return
    counts = Counter(meta.get("counts") or {})
    for role, keys in MEASURED.items():
        use = stage.uses[role]
        calls = sum(int(counts.get(k, 0)) for k in keys)
        per_prompt = use.prompt_tokens / use.calls if use.calls else 0
        per_completion = use.completion_tokens / use.calls if use.calls else 0
        stage.uses[role] = Use(measured=True)
        stage.uses[role].add(calls, per_prompt, per_completion)


def price(model: str, use: Use) -> float | None:
    """USD for `use` of `model` from litellm's table; 0 for a local engine or server; None if unpriced."""
    if not model or model.startswith(("local/", "hosted_vllm/")) or use.calls == 0:
        return 0.0
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # the table shipped with litellm, offline
    import litellm

    try:
        prompt_usd, completion_usd = litellm.cost_per_token(
            model=model, prompt_tokens=use.prompt_tokens, completion_tokens=use.completion_tokens)
    except Exception:  # litellm raises its own error types for a model it has no price for
        return None
    return prompt_usd + completion_usd


def estimate(config_path: str, run_dir: str | None = None) -> dict:
    argv = ["--config", config_path]
    loop = parse_config(LoopConfig, "loop", argv)
    # Each stage's config as the stage reads it: who plays each role comes from the run (collabloop.roles).
    sections = {name: parse_config(s.config, name, argv) for name, s in record_stages().items()}
    # The kind whose own metric the reward weighs sizes a task file that is not here.
    kind = kind_scored_by(sections["annotate"].metric_weights)
    tasks = task_set(loop.train_tasks, sections["contexts"].max_tasks, kind, "train")
    per_iteration = sections["contexts"].tasks_per_iteration
    if per_iteration is not None and per_iteration < tasks.count:  # each iteration opens its own slice
        share = per_iteration / tasks.count
        tasks = replace(tasks, count=per_iteration, without_opening=round(tasks.without_opening * share))
    evals = task_set(loop.eval_tasks, None, kind, "eval") if loop.eval_tasks else None
    models = {"policy": "local/" + loop.initial_model, "simulator": sections["simulate"].simulator_model,
              "judge": sections["annotate"].judge_model}
    run = Path(run_dir or loop.run_dir)
    iterations = []
    for i in range(0, loop.num_iterations + 1):
        stages = iteration_uses(i, loop, sections, tasks, evals)
        if loop.online:  # its trainer's own sampling is not estimated
            stages = [s for s in stages if s.stage == "evaluate"]
        for stage in stages:
            if (output := output_path(stage.stage, run, i)).exists():
                use_measured(stage, output)
        iterations.append({"iteration": i, "stages": stages})
    per_future = None
    if loop.use_simulation:
        one = StageUse("one future")
        sim, gen = sections["simulate"], sections["generate"]
        one.uses["policy"].add(1, tasks.opening_tokens, gen.max_new_tokens)
        end = play(one, 1, tasks.opening_tokens + gen.max_new_tokens, sim.window_turns, False, sim,
                   sim.max_new_tokens, tasks.goal_tokens)
        for fixed, written in _judge_prompts(sections["annotate"].metric_weights, tasks.goal_tokens,
                                             sections["annotate"]):
            one.uses["judge"].add(1, fixed + end, written)
        per_future = one
    return {"loop": loop, "models": models, "tasks": tasks, "evals": evals, "iterations": iterations,
            "per_future": per_future, "sections": sections}


def _k(n: int) -> str:
    return f"{n / 1000:.1f}k" if n >= 1000 else str(n)


def _usd(value: float | None, model: str = "") -> str:
    if model.startswith(("local/", "hosted_vllm/")):
        return "local"
    return "no price" if value is None else f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def render(result: dict) -> str:
    models, loop = result["models"], result["loop"]
    lines = [f"estimate for {loop.num_iterations} iteration{'s' if loop.num_iterations > 1 else ''} of "
             f"{loop.algorithm}; policy {loop.initial_model}, "
             f"simulator {models['simulator']}, judge {models['judge']}", "",
             "| iteration | stage | role | calls | prompt tokens | completion tokens | cost |",
             "|---|---|---|---|---|---|---|"]
    total: dict[str, Use] = {role: Use() for role in ROLES}
    total_usd: float | None = 0.0
    for it in result["iterations"]:
        for stage in it["stages"]:
            for role, use in stage.uses.items():
                if not use.calls:
                    continue
                usd = price(models[role], use)
                total_usd = None if total_usd is None or usd is None else total_usd + usd
                for key in ("calls", "prompt_tokens", "completion_tokens"):
                    setattr(total[role], key, getattr(total[role], key) + getattr(use, key))
                calls = f"{use.calls:,}" + (" (measured)" if use.measured else "")
                lines.append(f"| {it['iteration']} | {stage.stage} | {role} | {calls} | {_k(use.prompt_tokens)} | "
                             f"{_k(use.completion_tokens)} | {_usd(usd, models[role])} |")
    lines.append("")
    for role, use in total.items():
        lines.append(f"total {role}: {use.calls:,} calls, {_k(use.prompt_tokens)} prompt and "
                     f"{_k(use.completion_tokens)} completion tokens, {_usd(price(models[role], use), models[role])}")
    lines.append(f"total cost: {_usd(total_usd)}")
    one = result["per_future"]
    if one is not None:
        w = result["sections"]["simulate"].window_turns
        parts = ", ".join(f"{role} {_k(u.prompt_tokens)}/{_k(u.completion_tokens)} in/out"
                          for role, u in one.uses.items() if u.calls)
        usd = sum(price(models[r], u) or 0.0 for r, u in one.uses.items())
        lines += ["", f"one candidate with one simulated future of w={w}: {parts}, {_usd(usd)}"]
        if w == 2:
            lines.append("  (CollabLLM's Table 7, MediumDocEdit at w=2 with gpt-4o-mini: policy 2.55k/0.91k, "
                         "simulator 4.55k/0.69k, $0.00439 per forward sample)")
    tasks, evals = result["tasks"], result["evals"]
    source = f"assumed: {loop.train_tasks} is not here" if tasks.assumed else loop.train_tasks
    lines += ["", "assumptions:",
              f"- {tasks.count} training contexts an iteration ({source}), goals of {tasks.goal_tokens:.0f} tokens, "
              f"openings of {tasks.opening_tokens:.0f}"
              + ("; from iteration 2 as many continued conversations again" if loop.continue_conversations else ""),
              "- every reply runs to its token limit; no conversation ends early; no call is a cache hit",
              "- tokens counted as 4 characters each",
              "- local engines and servers (local/..., hosted_vllm/...) cost nothing"]
    if evals is not None:
        lines.append(f"- evaluation: {evals.count} held-out tasks x {result['sections']['evaluate'].num_samples} "
                     f"conversations of {result['sections']['evaluate'].max_turns} turns"
                     + (" (assumed: the task file is not here)" if evals.assumed else ""))
    if loop.online:
        lines.append(f"- {loop.algorithm}: the trainer's own rollouts are not estimated; only evaluation is")
    return "\n".join(lines)
