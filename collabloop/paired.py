"""Paired evaluation for the run report: every evaluated iteration against iteration 0, task by task.

Every evaluation plays the same held-out openings, so a later model can be
compared with the initial one on each task rather than through two separate
intervals, which overlap long after the difference is clear because task
difficulty varies more than the models do. Pairing is by `task_id`, not by
conversation id: an evaluation may play several conversations per task
("<context id>/sample<j>"), and a task's value is the mean over its
conversations that have one. The difference of a task is mean_i - mean_0,
over the tasks with a value in both iterations; the others are left out and
counted. The interval resamples tasks (`stats.paired_bootstrap`), seeded, so
the same run gives the same report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from collabloop.metrics import direction
from collabloop.records import EvalConversation
from collabloop.stats import BOOTSTRAP_RESAMPLES, markdown_table, paired_bootstrap, paired_verdict
from collabloop.stats import format_number as _fmt
from collabloop.task_kinds import task_metrics

BASE_ITERATION = 0  # the initial model
CONFIDENCE = 0.95
BOOTSTRAP_SEED = 0


def task_values(records: Iterable[EvalConversation]) -> dict[str, dict[str, list[float]]]:
    """{metric: {task_id: [value of each conversation]}}; a failed value (None) is left out, not scored 0."""
    out: dict[str, dict[str, list[float]]] = {}
    for record in records:
        for metric, value in record.metrics.items():
            per_task = out.setdefault(metric, {})
            if value is not None:
                per_task.setdefault(record.task_id, []).append(value)
    return out


def compare_tasks(
    base: Mapping[str, Sequence[float]],
    other: Mapping[str, Sequence[float]],
    confidence: float = CONFIDENCE,
    num_samples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict:
    """`other` against `base` on the tasks both have a value for ({task_id: values}, several per task allowed).

    Returns the paired interval ({"mean", "ci_low", "ci_high", "n"}, n = tasks
    paired) with "base_mean" and "other_mean" (means of the per-task means over
    the paired tasks, so "mean" is their difference), "base_conversations" and
    "other_conversations" (values averaged on each side), and "only_base" /
    "only_other" (tasks left out because the other side has no value).
    """
    base = {t: v for t, v in base.items() if v}
    other = {t: v for t, v in other.items() if v}
    # Sorted: the resampling sees the same order whatever order the conversations (or shards) were written in.
    shared = sorted(set(base) & set(other))
    base_means = [math.fsum(base[t]) / len(base[t]) for t in shared]
    other_means = [math.fsum(other[t]) / len(other[t]) for t in shared]
    paired = paired_bootstrap([b - a for a, b in zip(base_means, other_means)], confidence, num_samples, seed)
    return {
        **paired,
        "base_mean": math.fsum(base_means) / len(shared) if shared else None,
        "other_mean": math.fsum(other_means) / len(shared) if shared else None,
        "base_conversations": sum(len(base[t]) for t in shared),
        "other_conversations": sum(len(other[t]) for t in shared),
        "only_base": len(base.keys() - other.keys()),
        "only_other": len(other.keys() - base.keys()),
    }


def task_mean(values: Mapping[str, Sequence[float]]) -> dict:
    """One model's figure on its own, when there is nothing to pair it with (only iteration 0 evaluated).

    The mean of the per-task means with the same bootstrap over tasks as
    `compare_tasks`, so the two read alike: {"mean", "ci_low", "ci_high", "n"}
    (n = tasks with a value) and "conversations" (values averaged).
    """
    present = {t: v for t, v in values.items() if v}
    means = [math.fsum(present[t]) / len(present[t]) for t in sorted(present)]
    ci = paired_bootstrap(means, CONFIDENCE, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)
    return {**ci, "conversations": sum(len(v) for v in present.values())}


def task_metric(metrics: Iterable[str]) -> str | None:
    """The metric a headline states: a task kind's own success measure when scored (`TaskKind.task_metric`,
    the kinds in the order they were registered), else the first one."""
    metrics = list(metrics)
    return next((m for m in task_metrics() if m in metrics), next(iter(metrics), None))


def compare_iterations(iterations: dict) -> dict[int, dict]:
    """{i: {"metrics": {metric: compare_tasks(...)}} or {"reason": why not compared}} for each evaluated i > 0.

    `iterations` is the report's collected data: an evaluated iteration's
    "eval" holds "conversations" with its "task_values" (None when
    conversations.jsonl is missing). Empty when iteration 0 was not evaluated.
    """
    base_eval = (iterations.get(BASE_ITERATION) or {}).get("eval")
    if not base_eval:
        return {}
    base = (base_eval.get("conversations") or {}).get("task_values")
    out: dict[int, dict] = {}
    for i, it in iterations.items():
        if i <= BASE_ITERATION or not it["eval"]:
            continue
        other = (it["eval"].get("conversations") or {}).get("task_values")
        if base is None or other is None:
            side = BASE_ITERATION if base is None else i
            out[i] = {"reason": f"iter_{side}/eval/conversations.jsonl is missing"}
            continue
        metrics = list(base) + [m for m in other if m not in base]
        out[i] = {"metrics": {m: compare_tasks(base.get(m, {}), other.get(m, {})) for m in metrics}}
    return out


def verdict(comparison: dict, metric: str) -> str:
    """better / worse / within noise from the paired interval, in the direction the metric declares
    (`register_metric(higher_is_better=...)`), whatever the sign of its weight in the reward."""
    said = paired_verdict(comparison, direction(metric))
    # A metric that declares no direction (or is none, as turns) only moved: it is not judged.
    return f"{said} (no declared direction)" if said in ("higher", "lower") else said


def n_tasks(n: int) -> str:
    return f"{n} task" + ("" if n == 1 else "s")


def difference(c: dict, with_confidence: bool = True) -> str:
    """A paired difference as every report prints it: "+0.130 [95% +0.060, +0.200]" ("—" with no task)."""
    if c["mean"] is None:
        return "—"
    level = f"{CONFIDENCE:.0%} " if with_confidence else ""
    low, high = _fmt(c["ci_low"], signed=True), _fmt(c["ci_high"], signed=True)
    return f"{_fmt(c['mean'], signed=True)} [{level}{low}, {high}]"


def headline(data: dict) -> str:
    """The first line of report.md: the last evaluated iteration against iteration 0 on the task metric."""
    evaluated = [i for i, it in data["iterations"].items() if it["eval"]]
    if not evaluated:
        return "**Headline:** no evaluation yet, so no held-out comparison of the models."
    if BASE_ITERATION not in evaluated:
        return (f"**Headline:** no paired comparison: iteration {BASE_ITERATION} (the initial model) "
                "was not evaluated.")
    last = evaluated[-1]
    if last == BASE_ITERATION:
        return f"**Headline:** only iteration {BASE_ITERATION} (the initial model) was evaluated: nothing to compare."
    compared = data["paired"][last]
    if "reason" in compared:
        return f"**Headline:** no paired comparison of iteration {last}: {compared['reason']}."
    metrics = compared["metrics"]
    if not metrics:
        return f"**Headline:** no paired comparison of iteration {last}: the conversations hold no metric."
    metric = task_metric(metrics)
    c = metrics[metric]
    left_out = c["only_base"] + c["only_other"]
    if c["n"] == 0:
        return (f"**Headline:** {metric}: no task has a value in both iteration {BASE_ITERATION} and iteration "
                f"{last} ({c['only_base']} vs {c['only_other']} tasks with a value).")
    line = (
        f"**Headline:** {metric}: iteration {last} {_fmt(c['other_mean'])} vs iteration {BASE_ITERATION} "
        f"{_fmt(c['base_mean'])}, paired difference {difference(c)} over {n_tasks(c['n'])} "
        f"({c['base_conversations']} vs {c['other_conversations']} conversations): "
        f"{verdict(c, metric)}"
    )
    if left_out:
        line += f" ({n_tasks(left_out)} with a value in only one of the two left out)"
    return line + "."


def section(data: dict) -> list[str]:
    """The paired table of report.md's first section (ending in a blank line), or nothing to compare: []."""
    compared = data["paired"]
    if not compared:
        return []
    base = BASE_ITERATION
    lines = [
        f"**Paired with iteration {base}.** Every evaluation plays the same held-out openings, so each task is "
        "compared with itself: a task's value is the mean over its conversations with a value, the difference "
        f"is iteration i − iteration {base} over the tasks with a value in both (the others are left out and "
        f"counted), and the interval is a {CONFIDENCE:.0%} paired bootstrap over tasks ({BOOTSTRAP_RESAMPLES} "
        f"resamples, seed {BOOTSTRAP_SEED}). The means are over the paired tasks, so they differ from the table "
        "above when a task is left out. A verdict is *better* or *worse* only when the interval excludes 0, in "
        "the direction the metric declares (not the sign of its reward weight); a metric that declares none is "
        "only *higher* or *lower*.",
        "",
    ]
    header = ["iteration", "metric", f"iter {base} mean", "iter i mean", f"difference [{CONFIDENCE:.0%} CI]",
              "verdict", "tasks paired", f"conversations (iter {base} vs i)", f"tasks left out (only {base} / only i)"]
    rows, notes = [], []
    for i, entry in compared.items():
        if "reason" in entry:
            notes.append(f"- iteration {i}: not compared, {entry['reason']}.")
            continue
        for metric, c in entry["metrics"].items():
            rows.append([str(i), metric, _fmt(c["base_mean"]), _fmt(c["other_mean"]), difference(c, False),
                         verdict(c, metric), str(c["n"]),
                         f"{c['base_conversations']} vs {c['other_conversations']}",
                         f"{c['only_base']} / {c['only_other']}"])
    if rows:
        lines += markdown_table(header, rows)
    if notes:
        lines += ([""] if rows else []) + notes
    return lines + [""]
