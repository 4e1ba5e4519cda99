"""What a metric is: its scoring function and what it declares about itself, registered by name.

A metric scores a list of `ScoringItem`s (one per simulated future) and
returns one `MetricValue` per item: a float, or an error that keeps the value
out of every mean. Its declaration says which way is better
(`higher_is_better`: the report's better/worse verdicts read it, not the sign
of the metric's weight in the reward) and what it needs: the LLM judge, the
code sandbox, a reward model. The built-in metrics are registered in
`collabloop.metrics`; import that module (not this one) to see them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from collabloop.llm_client import LLMClient
from collabloop.records import Task


@dataclass
class ScoringItem:
    task: Task
    history: list[dict]  # the context the candidate answered
    window: list[dict]  # the candidate and the simulated turns after it


@dataclass
class MetricValue:
    value: float | None
    error: str | None = None


@dataclass
class MetricResources:
    """What metrics may need; built once per stage."""

    tokenizer: Any = None
    judge: LLMClient | None = None
    reward_model: Any = None  # a collabloop.reward_model.RewardModelScorer
    options: dict = field(default_factory=dict)


MetricFn = Callable[[list[ScoringItem], MetricResources], list[MetricValue]]


@dataclass(frozen=True)
class Metric:
    """A registered metric. `higher_is_better`: True or False, or None where neither is (a description of
    the conversation, such as how often the assistant asks: the report then says only which way it moved)."""

    name: str
    fn: MetricFn
    higher_is_better: bool | None
    uses_judge: bool = False  # the stage makes a judge client and opens the LLM cache, and only then
    needs_sandbox: bool = False  # runs the assistant's code: the stage checks the sandbox before any work
    needs_reward_model: bool = False  # the stage loads the config's reward_model (which must then be set)
    # A judge's metric: the fixed text of its prompt (the estimate prices it), whether the prompt also holds
    # the task's goal, and whether the judge reasons before it answers (up to judge_reasoning_max_tokens).
    judge_prompt: str = ""
    judge_reads_goal: bool = False
    judge_reasons: bool = False


METRICS: dict[str, Metric] = {}


def register_metric(
    name: str, *, higher_is_better: bool | None, uses_judge: bool = False, needs_sandbox: bool = False,
    needs_reward_model: bool = False, judge_prompt: str = "", judge_reads_goal: bool = False,
    judge_reasons: bool = False,
) -> Callable[[MetricFn], MetricFn]:
    """Register a metric by name with its declaration (see `Metric`): which way is better, and what it needs."""
    if higher_is_better not in (True, False, None):
        raise ValueError(f"metric {name!r}: higher_is_better must be true, false or None, got {higher_is_better!r}")

    def wrap(fn: MetricFn) -> MetricFn:
        if name in METRICS:
            raise ValueError(f"metric {name!r} is registered twice")
        METRICS[name] = Metric(name, fn, higher_is_better, uses_judge or bool(judge_prompt), needs_sandbox,
                               needs_reward_model, judge_prompt, judge_reads_goal, judge_reasons)
        return fn

    return wrap


def get_metric(name: str) -> MetricFn:
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; registered metrics: {sorted(METRICS)}")
    return METRICS[name].fn


def uses_judge(metric_names: Iterable[str]) -> bool:
    return any(name in METRICS and METRICS[name].uses_judge for name in metric_names)


def needs_sandbox(metric_names: Iterable[str]) -> bool:
    return any(name in METRICS and METRICS[name].needs_sandbox for name in metric_names)


def needs_reward_model(metric_names: Iterable[str]) -> list[str]:
    """The metrics named that need a reward model (empty: none does)."""
    return [name for name in metric_names if name in METRICS and METRICS[name].needs_reward_model]


def direction(name: str) -> float | None:
    """+1 where higher is better, -1 where lower is, None where the metric declares neither or is not
    registered (`turns`, which every evaluation reports, is no metric)."""
    metric = METRICS.get(name)
    if metric is None or metric.higher_is_better is None:
        return None
    return 1.0 if metric.higher_is_better else -1.0
