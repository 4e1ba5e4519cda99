"""Task kinds: one object says what a task of a kind is and how the pipeline treats it.

A `TaskKind` holds everything that depends on a task's `task` field: how the
final answer is read from an assistant message, which metric is the kind's own
success measure, what its records must hold beyond the common fields, and the
sizes the cost estimate assumes for a task file that is not on this machine.
A kind of your own is one module that builds a `TaskKind` and calls
`register_task_kind` (and registers its metric with
`collabloop.metrics.register_metric`); naming that module in the run YAML's
`loop.plugins` makes every stage import it (`collabloop.plugins`).

This module stays light: `collabloop.records` imports it, and the answer
readers import math_verify only when they are called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# A check of a parsed task's fields ({"id", "task", "goal", "reference", "prompt", "metadata"}) beyond the
# common ones: (field, problem) for the first field that is wrong, None when the task is fine.
TaskCheck = Callable[[dict], tuple[str, str] | None]


@dataclass(frozen=True)
class TaskKind:
    """What a task kind is and how it is scored.

    `read_answer`: the final answer an assistant message states (a falsy value when it states none), or
    None where the kind has no short answer (code, documents): such conversations cannot end on an answer
    and the `accuracy` metric does not score them. `same_answer`: whether a read answer equals the
    reference's (read with `read_answer` too); None compares them with ==. `task_metric`: the metric that
    is the kind's own success measure (the report's headline); `other_task_metrics`: other forms of the
    same measure (an LLM judge's), the headline's where the first is not scored. `check`: the kind's own
    record check.
    `assumed_eval_tasks` / `assumed_goal_tokens`: what `collabloop.estimate` assumes of a held-out task
    file that is not here.
    """

    name: str
    description: str
    task_metric: str
    other_task_metrics: tuple[str, ...] = ()
    read_answer: Callable[[str], Any] | None = None
    same_answer: Callable[[Any, Any], bool] | None = None
    check: TaskCheck | None = None
    assumed_eval_tasks: int = 200
    assumed_goal_tokens: int = 400

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip() or self.name != self.name.strip():
            raise ValueError(f"a task kind is a non-empty name without surrounding spaces, got {self.name!r}")
        for key in ("description", "task_metric"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key).strip():
                raise ValueError(f"task kind {self.name!r}: {key} must be a non-empty string")
        for key in ("assumed_eval_tasks", "assumed_goal_tokens"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"task kind {self.name!r}: {key} must be a positive whole number, got {value!r}")
        if self.same_answer is not None and self.read_answer is None:
            raise ValueError(f"task kind {self.name!r}: same_answer without read_answer compares nothing")

    @property
    def ends_on_answer(self) -> bool:
        """Whether a conversation of this kind can end on a stated answer (`end_on_answer`)."""
        return self.read_answer is not None

    def answers_match(self, gold: Any, predicted: Any) -> bool:
        if self.same_answer is None:
            return gold == predicted
        return bool(self.same_answer(gold, predicted))


def _math_answer(text: str) -> list:
    from math_verify import parse

    return parse(text)


def _math_same(gold: list, predicted: list) -> bool:
    from math_verify import verify

    return verify(gold, predicted)


# The built-in kinds. CollabLLM trained on 500 conversations per task (its Table 5; the estimate's training
# count, whatever the kind) and tested on 200 MATH problems, 600 BigCodeBench problems and 100 Medium
# articles; its MediumDocEdit goals hold a whole article: the assumed sizes come from there.
TASK_KINDS: dict[str, TaskKind] = {
    kind.name: kind
    for kind in (
        TaskKind("math", "a question with one number as its answer (metric accuracy)", "accuracy",
                 other_task_metrics=("judge_accuracy",), read_answer=_math_answer, same_answer=_math_same,
                 assumed_eval_tasks=200, assumed_goal_tokens=150),
        TaskKind("code", "a Python function checked by its tests in the sandbox (metric pass_rate)", "pass_rate",
                 assumed_eval_tasks=600, assumed_goal_tokens=400),
        TaskKind("doc", "a document to write, compared with the goal document (metric bleu)", "bleu",
                 other_task_metrics=("bleu_extracted",), assumed_eval_tasks=100, assumed_goal_tokens=1500),
    )
}
# The kind assumed where nothing names one (the estimate of a run whose reward weighs no kind's task metric):
# the demo's.
DEFAULT_TASK_KIND = "math"


def register_task_kind(kind: TaskKind) -> TaskKind:
    """Let tasks of `kind.name` be read and scored; a different kind under a registered name is refused."""
    if not isinstance(kind, TaskKind):
        raise TypeError(f"register_task_kind takes a collabloop.task_kinds.TaskKind, got {type(kind).__name__}")
    known = TASK_KINDS.get(kind.name)
    if known is not None and known != kind:
        raise ValueError(f"task kind {kind.name!r} is registered twice, with different definitions")
    TASK_KINDS[kind.name] = kind
    return kind


def task_kind(name: str) -> TaskKind:
    """The registered kind of that name; a task record of an unknown kind is refused when read, so this
    fails only for a name that came from elsewhere."""
    if name not in TASK_KINDS:
        raise ValueError(f"unknown task kind {name!r}; the known kinds are {sorted(TASK_KINDS)}")
    return TASK_KINDS[name]


def task_metrics() -> list[str]:
    """Every registered kind's task metrics (its own first, then its other forms), in the order the kinds
    were registered (built-ins first)."""
    return list(dict.fromkeys(m for kind in TASK_KINDS.values() for m in (kind.task_metric, *kind.other_task_metrics)))


def kind_scored_by(metric_names) -> TaskKind:
    """The first registered kind whose task metric is among `metric_names`; else the default kind."""
    names = set(metric_names)
    return next((k for k in TASK_KINDS.values() if names & {k.task_metric, *k.other_task_metrics}),
                TASK_KINDS[DEFAULT_TASK_KIND])
