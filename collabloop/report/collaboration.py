"""Collaboration in the report: the held-out tasks split by whether their opening withholds a fact.

A task with `metadata.underspecified: true` opens without a fact only the
user has (its goal holds it): a good collaborator asks for it. A task with
false or no field is stated in full: asking there only costs turns. The split
is read from the task file each evaluation names (summary.json `tasks_path`);
when no task of it has the field there is one split, "all", and the report's
headline stays the paired one of `collabloop.paired`.

Per evaluated iteration i > 0 and split, the task metric (accuracy), ask_rate,
token_amount and turns are paired by task with iteration 0 through
`paired.compare_tasks`, the report's one paired bootstrap. The task metric is
judged (better / worse); ask_rate only moves (higher / lower), since asking is
right on one split and a detour on the other; token_amount and turns are
"more" or "fewer", neither good nor bad by themselves. `compare.py` uses the
same functions for two runs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from collabloop import paired
from collabloop.jsonl import read_tasks
from collabloop.metrics import direction
from collabloop.stats import BOOTSTRAP_RESAMPLES, paired_verdict
from collabloop.stats import format_number as _fmt
from collabloop.stats import markdown_table as table

logger = logging.getLogger(__name__)

SPLIT_FIELD = "underspecified"
UNDERSPECIFIED, COMPLETE, ALL = "underspecified", "complete", "all"
ASK_METRIC = "ask_rate"
# Neither good nor bad by themselves: a change is "more" or "fewer" of them.
AMOUNT_METRICS = ("token_amount", "turns")
# Shown after the task metric when the evaluation scored them (`turns` it always does).
SPLIT_METRICS = (ASK_METRIC, *AMOUNT_METRICS)
# A summary's relative tasks_path is relative to where the loop ran: here, or the repository root.
REPO = Path(__file__).resolve().parents[2]

# Values per metric per task: {metric: {task_id: [value of each conversation]}} (`paired.task_values`).
TaskValues = Mapping[str, Mapping[str, list[float]]]


def resolve_tasks_path(tasks_path: str) -> Path | None:
    """The task file a summary names, looked up as given (absolute), from here, then from the repository root."""
    path = Path(tasks_path)
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, REPO / path]
    return next((c for c in candidates if c.is_file()), None)


def read_splits(summaries: Mapping[int, dict], run_dir: Path) -> dict:
    """The split of every task of the task files the evaluations name.

    Returns {"by_task": {task_id: "underspecified" | "complete"}, or None when no
    task has the field; "tasks_paths": the task files as the summaries name them;
    "notes": what could not be read or agreed}. A damaged task file raises
    `RecordError` (file:line:field), as the stages reading it do.
    """
    by_task: dict[str, str] = {}
    has_field = False
    notes: list[str] = []
    named: list[str] = []
    conflicts = 0
    for i, summary in summaries.items():
        tasks_path = summary.get("tasks_path")
        where = f"{run_dir.name}/iter_{i}/eval/summary.json"
        if not isinstance(tasks_path, str) or not tasks_path:
            notes.append(f"{where} names no tasks_path: its tasks are not split by opening.")
            continue
        if tasks_path in named:
            continue
        named.append(tasks_path)
        path = resolve_tasks_path(tasks_path)
        if path is None:
            notes.append(f"the task file {tasks_path} ({where} tasks_path) is not found from {Path.cwd()} or "
                         f"{REPO}: its tasks are not split by opening (run the report from the folder the loop "
                         "ran in).")
            logger.warning("%s: task file %s not found; no split by opening", where, tasks_path)
            continue
        for task in read_tasks(path):  # a field that is not true/false is a RecordError (file:line:field)
            value = task.metadata.get(SPLIT_FIELD)
            has_field = has_field or value is not None
            split = UNDERSPECIFIED if value else COMPLETE
            conflicts += by_task.setdefault(task.id, split) != split
    if conflicts:
        notes.append(f"{conflicts} task id(s) are underspecified in one task file and complete in another: "
                     "the first file's word is used.")
    return {"by_task": by_task if has_field else None, "tasks_paths": named, "notes": notes}


def split_values(values: TaskValues, by_task: Mapping[str, str] | None) -> tuple[dict[str, dict], int]:
    """({split: {metric: {task: values}}}, how many tasks have no split and are left out).

    Without a split (`by_task` None) the one split is "all". A split no task falls in is left out.
    """
    if by_task is None:
        return {ALL: {m: dict(v) for m, v in values.items()}}, 0
    out: dict[str, dict] = {UNDERSPECIFIED: {}, COMPLETE: {}}
    unknown: set[str] = set()
    for metric, per_task in values.items():
        for split in out:
            out[split][metric] = {}
        for task, task_vals in per_task.items():
            split = by_task.get(task)
            if split is None:
                unknown.add(task)
            else:
                out[split][metric][task] = task_vals
    return {s: v for s, v in out.items() if any(v.values())}, len(unknown)


def task_metric_of(metrics: list[str]) -> str | None:
    """The judged metric of a split: the task's success measure (`paired.task_metric`), never one of ours."""
    return paired.task_metric([m for m in metrics if m not in SPLIT_METRICS])


def shown_metrics(*values: TaskValues) -> list[str]:
    """The task metric, then ask_rate, token_amount and turns where scored."""
    scored: list[str] = []
    for v in values:
        scored += [m for m in v if m not in scored]
    first = task_metric_of(scored)
    return ([first] if first else []) + [m for m in SPLIT_METRICS if m in scored]


def compare_split_values(base: TaskValues, other: TaskValues, by_task: Mapping[str, str] | None) -> dict:
    """{"splits": {split: {metric: paired.compare_tasks(base, other)}}, "unsplit": tasks without a split}."""
    base_split, base_unknown = split_values(base, by_task)
    other_split, other_unknown = split_values(other, by_task)
    metrics = shown_metrics(base, other)
    splits = list(base_split) + [s for s in other_split if s not in base_split]
    compared = {
        s: {m: paired.compare_tasks(base_split.get(s, {}).get(m, {}), other_split.get(s, {}).get(m, {}))
            for m in metrics}
        for s in splits
    }
    return {"splits": compared, "unsplit": max(base_unknown, other_unknown),
            "task_metric": task_metric_of(metrics)}


def _values(it: dict | None) -> TaskValues | None:
    return (((it or {}).get("eval") or {}).get("conversations") or {}).get("task_values")


def compare_splits(iterations: Mapping[int, dict], by_task: Mapping[str, str] | None) -> dict:
    """Per split: iteration 0's own figures, and every evaluated iteration i > 0 paired with it.

    Returns {"base": {split: {metric: paired.task_mean}} or None (iteration 0 has
    no conversations), "base_unsplit": n, "compared": {i: compare_split_values(...)
    or {"reason": why not}}}; `iterations` as `reading.collect` reads them.
    """
    out: dict = {"base": None, "base_unsplit": 0, "compared": {}}
    if not (iterations.get(paired.BASE_ITERATION) or {}).get("eval"):
        return out  # nothing to pair with
    base = _values(iterations[paired.BASE_ITERATION])
    if base is not None:
        splits, out["base_unsplit"] = split_values(base, by_task)
        metrics = shown_metrics(base)
        out["base"] = {s: {m: paired.task_mean(v.get(m, {})) for m in metrics} for s, v in splits.items()}
    for i, it in iterations.items():
        if i <= paired.BASE_ITERATION or not it.get("eval"):
            continue
        other = _values(it)
        if base is None or other is None:
            side = paired.BASE_ITERATION if base is None else i
            out["compared"][i] = {"reason": f"iter_{side}/eval/conversations.jsonl is missing"}
        else:
            out["compared"][i] = compare_split_values(base, other, by_task)
    return out


def effect(metric: str, c: dict, task_metric: str | None) -> str:
    """The verdict of a paired difference, in the words the metric deserves (see the module docstring)."""
    if metric == task_metric:
        return paired_verdict(c, direction(metric))  # the task's own success measure, judged as it declares
    moved = paired_verdict(c, None)
    if metric in AMOUNT_METRICS:
        return {"higher": "more", "lower": "fewer"}.get(moved, moved)
    return moved


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.0%}"


def split_phrase(split: str, compared: Mapping[str, dict], task_metric: str, label: str = "paired") -> str:
    """"underspecified (20 tasks): accuracy 0.050 -> 0.180, paired +0.130 [95% +0.060, +0.200] better; asks
    1% -> 64%": the headline's words for one split (`label` names the difference, e.g. "B - A")."""
    c = compared[task_metric]
    if c["n"] == 0:
        return f"{split}: no task with {task_metric} in both"
    said = (f"{split} ({paired.n_tasks(c['n'])}): {task_metric} {_fmt(c['base_mean'])} -> {_fmt(c['other_mean'])}, "
            f"{label} {paired.difference(c)} {effect(task_metric, c, task_metric)}")
    ask = compared.get(ASK_METRIC)
    if ask and ask["n"]:
        said += f"; asks {_pct(ask['base_mean'])} -> {_pct(ask['other_mean'])}"
    return said


def base_phrase(split: str, figures: Mapping[str, dict], task_metric: str) -> str:
    """One model's words for one split, with nothing to pair: "complete (20 tasks): accuracy 0.210, asks 0%"."""
    c = figures[task_metric]
    said = f"{split} ({paired.n_tasks(c['n'])}): {task_metric} {_fmt(c['mean'])}"
    ask = figures.get(ASK_METRIC)
    if ask and ask["n"]:
        said += f", asks {_pct(ask['mean'])}"
    return said


def headline(data: dict) -> str | None:
    """The collaboration headline (last evaluated iteration vs iteration 0, per split), or None without a split
    or a comparison, where the report keeps `paired.headline`."""
    collab = data.get("collaboration") or {}
    evaluated = [i for i, it in data["iterations"].items() if it["eval"]]
    if collab.get("by_task") is None or not evaluated or evaluated[0] != paired.BASE_ITERATION:
        return None
    last = evaluated[-1]
    if last == paired.BASE_ITERATION:
        if not collab["base"]:
            return None
        said = [base_phrase(s, f, metric) for s, f in collab["base"].items() if (metric := task_metric_of(list(f)))]
        if not said:
            return None
        return (f"**Headline:** only iteration {last} (the initial model) was evaluated, nothing to compare: "
                + "; ".join(said) + ".")
    compared = collab["compared"].get(last) or {}
    if not compared.get("splits") or compared["task_metric"] is None:
        return None
    said = [split_phrase(s, c, compared["task_metric"]) for s, c in compared["splits"].items()]
    return f"**Headline:** iteration {last} vs iteration {paired.BASE_ITERATION}, paired by task: " + "; ".join(
        said) + "."


def comparison_rows(compared: Mapping[str, Mapping[str, dict]], task_metric: str | None) -> list[list[str]]:
    """[split, metric, base mean, other mean, difference [CI], verdict, tasks paired] per split and metric."""
    return [[split, metric, _fmt(c["base_mean"]), _fmt(c["other_mean"]), paired.difference(c, False),
             effect(metric, c, task_metric), str(c["n"])]
            for split, per_metric in compared.items() for metric, c in per_metric.items()]


VERDICT_WORDS = (
    "The task metric is *better* or *worse* only when the paired interval excludes 0; ask_rate is only *higher* "
    "or *lower* (asking is what an underspecified opening needs and a detour on a complete one); token_amount "
    "and turns are *more* or *fewer*, neither good nor bad by themselves; *n/a*: fewer than 2 tasks paired."
)


def section(data: dict) -> list[str]:
    """The split table of report.md's first section (ending in a blank line); [] without a split."""
    collab = data.get("collaboration") or {}
    notes = [f"- {n}" for n in collab.get("notes", [])]
    if collab.get("by_task") is None:
        return ["_No split by opening:_", *notes, ""] if notes else []
    base = paired.BASE_ITERATION
    files = ", ".join(f"`{p}`" for p in collab["tasks_paths"])
    intro = (f"**By opening: underspecified vs complete.** Tasks of {files} with `metadata.{SPLIT_FIELD}: true` "
             "open without a fact only the user has; the others are stated in full.")
    how = f"{paired.CONFIDENCE:.0%} bootstrap over tasks, {BOOTSTRAP_RESAMPLES} resamples"
    if collab["compared"]:
        intro += f" Each split's tasks are paired with iteration {base} as above ({how}). {VERDICT_WORDS}"
    else:
        intro += (f" Only iteration {base} was evaluated, so each split shows its mean of per-task means ({how}); "
                  "a task's value is the mean over its conversations.")
    lines = [intro, ""]
    rows, reasons = [], []
    for i, entry in collab["compared"].items():
        if "reason" in entry:
            reasons.append(f"- iteration {i}: not split, {entry['reason']}.")
            continue
        rows += [[str(i), *row] for row in comparison_rows(entry["splits"], entry["task_metric"])]
        if entry["unsplit"]:
            notes.append(f"- iteration {i}: {paired.n_tasks(entry['unsplit'])} not in the task file, left out.")
    if rows:
        lines += table(["iteration", "split", "metric", f"iter {base} mean", "iter i mean",
                         f"difference [{paired.CONFIDENCE:.0%} CI]", "verdict", "tasks paired"], rows)
    elif collab["base"]:
        # Nothing to pair with (no training iteration evaluated): iteration 0's own figures.
        lines += table(
            ["split", "metric", f"iter {base} mean [{paired.CONFIDENCE:.0%} CI over tasks]", "tasks",
             "conversations"],
            [[split, metric, f"{_fmt(c['mean'])} [{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}]", str(c["n"]),
              str(c["conversations"])] for split, figures in collab["base"].items() for metric, c in figures.items()])
        if collab["base_unsplit"]:
            notes.append(f"- iteration {base}: {paired.n_tasks(collab['base_unsplit'])} not in the task file, "
                         "left out.")
    elif not reasons:
        reasons.append(f"- iteration {base}: iter_{base}/eval/conversations.jsonl is missing, so no split figures.")
    extra = reasons + notes
    return lines + ([""] if rows or collab["base"] else []) + extra + ([""] if extra else [])


# The simulate and evaluate stages' counts of what the simulated users did (collabloop/collaboration.py).
USER_COUNTS = {
    "user_turns": "user turns",
    "user_revealed": "revealed a withheld fact",
    "user_terminated": "ended the chat",
    "user_drifted": "drifted (stated an invented number)",
    "conversations_ended_on_answer": "conversations ended on the answer",
}
# Of the user turns: shown with their share.
_SHARE_OF_TURNS = ("user_revealed", "user_terminated", "user_drifted")


def _user_cells(counts: Mapping) -> list[str] | None:
    if not any(k in counts for k in USER_COUNTS):
        return None  # an older run's meta: nothing to show
    # The stages count with a Counter, which writes no key it never added to: where user turns were
    # counted, an absent count is 0.
    zero = 0 if "user_turns" in counts else None
    cells = []
    for key in USER_COUNTS:
        value = counts.get(key, zero)
        turns = counts.get("user_turns")
        if value is None:
            cells.append("—")
        elif key in _SHARE_OF_TURNS and turns:
            cells.append(f"{value} ({value / turns:.0%})")
        else:
            cells.append(str(value))
    return cells


def simulated_user_section(data: dict) -> list[str]:
    """What the simulated users did, per iteration and stage, from the meta files' counts; [] when none has them."""
    rows = []
    for i, it in data["iterations"].items():
        simulate = (it["stages"].get("simulations") or {}).get("counts") or {}
        for where, counts in (("simulate (training futures)", simulate),
                              ("evaluate (held-out conversations)", (it["eval"] or {}).get("counts") or {})):
            cells = _user_cells(counts)
            if cells is not None:
                rows.append([str(i), where, *cells])
    if not rows:
        return []
    return [
        "### Simulated user",
        "",
        "From `simulations.meta.json` and `eval/conversations.meta.json` (`counts`): a user turn *revealed* a "
        "fact when it states a number the task's goal holds and its opening does not, *ended the chat* when it "
        "sends the termination signal, *drifted* when it states a number in neither its goal nor the "
        "conversation (shares: of the user turns). Definitions: `collabloop/collaboration.py`.",
        "",
        *table(["iteration", "stage", *USER_COUNTS.values()], rows),
        "",
    ]
