"""Two runs compared on the held-out tasks they share: CollabLLM's central comparison.

    python -m collabloop.report --compare RUN_A RUN_B [--output_dir DIR]

takes each run's last evaluated iteration and pairs them task by task
(`paired.compare_tasks`, the report's one paired bootstrap), per split by
opening (`collaboration`): each run's mean and the difference B − A with its
interval and verdict; then each run's own change against its iteration 0.
Writes DIR/compare.md (default RUN_B/report/compare_<name of RUN_A>), atomically.

A run without an evaluation, or whose last evaluation has no
conversations.jsonl, is an error naming the folder; so are two runs that share
no task id (they were evaluated on different task files).
"""

from __future__ import annotations

import logging
from pathlib import Path

from collabloop import paired
from collabloop.config import ConfigError
from collabloop.jsonl import atomic_file
from collabloop.report.collaboration import (
    VERDICT_WORDS,
    TaskValues,
    compare_split_values,
    compare_splits,
    comparison_rows,
    read_splits,
    split_phrase,
)
from collabloop.report.reading import collect_evaluations
from collabloop.stats import BOOTSTRAP_RESAMPLES
from collabloop.stats import markdown_table as table

logger = logging.getLogger(__name__)

COMPARE_FILE = "compare.md"


def _read_run(run_dir: Path, label: str) -> dict:
    evaluations = collect_evaluations(run_dir)
    if not evaluations:
        raise FileNotFoundError(
            f"{run_dir}: run {label} has no evaluated iteration (no iter_<i>/eval/summary.json); evaluate it "
            "first (the loop's evaluate stage, or `--num_iterations 0` to evaluate the initial model alone)")
    last = max(evaluations)
    conversations = evaluations[last]["eval"]["conversations"]
    if conversations is None:
        raise FileNotFoundError(
            f"{run_dir / f'iter_{last}' / 'eval' / 'conversations.jsonl'}: run {label}'s last evaluation has a "
            "summary.json but no conversations, so its tasks cannot be paired; rerun its evaluate stage")
    summaries = {i: e["eval"]["summary"] for i, e in evaluations.items()}
    return {"dir": run_dir, "name": run_dir.resolve().name, "label": label, "last": last,
            "evaluations": evaluations, "values": conversations["task_values"],
            "tasks_path": summaries[last].get("tasks_path"), "splits": read_splits(summaries, run_dir)}


def _tasks_of(values: TaskValues) -> set[str]:
    return {t for per_task in values.values() for t in per_task}


def _merged_splits(a: dict, b: dict) -> dict[str, str] | None:
    """One split per task for both runs: B's task file, then A's for tasks it lacks; None when neither has one."""
    if a["splits"]["by_task"] is None and b["splits"]["by_task"] is None:
        return None
    return {**(a["splits"]["by_task"] or {}), **(b["splits"]["by_task"] or {})}


def compare_runs(run_a: str | Path, run_b: str | Path) -> dict:
    """Everything compare.md shows: both runs read, paired B − A per split, and each run against its iteration 0."""
    a, b = _read_run(Path(run_a), "A"), _read_run(Path(run_b), "B")
    tasks_a, tasks_b = _tasks_of(a["values"]), _tasks_of(b["values"])
    shared = tasks_a & tasks_b
    if not shared:
        raise ConfigError(
            f"{a['dir']} (iter_{a['last']}, {len(tasks_a)} tasks, task file {a['tasks_path']}) and {b['dir']} "
            f"(iter_{b['last']}, {len(tasks_b)} tasks, task file {b['tasks_path']}) share no task id, so nothing "
            "pairs: compare runs evaluated on the same held-out task file")
    by_task = _merged_splits(a, b)
    for run in (a, b):
        # The run's own change: its last evaluation paired with its iteration 0, split like the comparison.
        run["own"] = compare_splits(
            {i: run["evaluations"][i] for i in {paired.BASE_ITERATION, run["last"]} if i in run["evaluations"]},
            by_task)["compared"].get(run["last"])
    notes = [f"run {r['label']}: {n}" for r in (a, b) for n in r["splits"]["notes"]]
    logger.info("comparing %s (iter_%d) with %s (iter_%d) on %d shared tasks",
                a["dir"], a["last"], b["dir"], b["last"], len(shared))
    return {"a": a, "b": b, "shared": len(shared), "only_a": len(tasks_a - shared), "only_b": len(tasks_b - shared),
            "same_task_file": a["tasks_path"] == b["tasks_path"], "by_task": by_task, "notes": notes,
            "compared": compare_split_values(a["values"], b["values"], by_task)}


def _run_line(run: dict) -> str:
    return (f"- **{run['label']}**: `{run['dir']}` ({run['name']}), iteration {run['last']} "
            f"(its last evaluated), task file `{run['tasks_path']}`")


def headline(data: dict) -> str:
    """The first line of compare.md: B − A per split on the task metric (and the ask rates)."""
    a, b, compared = data["a"], data["b"], data["compared"]
    if compared["task_metric"] is None:
        return "**Compare:** the conversations hold no metric: nothing to compare."
    said = [split_phrase(s, c, compared["task_metric"], "B - A")
            for s, c in compared["splits"].items()]
    return (f"**Compare:** B {b['name']} (iter {b['last']}) vs A {a['name']} (iter {a['last']}) on "
            f"{data['shared']} shared tasks, A -> B: " + "; ".join(said) + ".")


def render_compare(data: dict) -> str:
    """compare.md from `compare_runs`'s data."""
    a, b, compared = data["a"], data["b"], data["compared"]
    base = paired.BASE_ITERATION
    if data["same_task_file"]:
        files = f"Both were evaluated on the same task file; {paired.n_tasks(data['shared'])} shared"
    else:
        files = (f"**The runs name different task files**; {paired.n_tasks(data['shared'])} ids shared, and a "
                 "shared id may not be the same task")
    lines = [
        f"# Run comparison: {b['name']} vs {a['name']}",
        "",
        headline(data),
        "",
        _run_line(a),
        _run_line(b),
        "",
        f"{files} ({data['only_a']} only in A, {data['only_b']} only in B: left out). Each task's value is the mean "
        f"over its conversations; the difference is B − A per task, with a {paired.CONFIDENCE:.0%} paired bootstrap "
        f"over tasks ({BOOTSTRAP_RESAMPLES} resamples, seed {paired.BOOTSTRAP_SEED}). "
        f"{VERDICT_WORDS}",
        "",
        "## B − A, paired by task",
        "",
    ]
    rows = comparison_rows(compared["splits"], compared["task_metric"])
    lines += table(
        ["split", "metric", "A mean", "B mean", f"B − A [{paired.CONFIDENCE:.0%} CI]", "verdict", "tasks paired"],
        rows) if rows else ["_No metric to compare._"]
    lines += ["", f"## Each run against its own iteration {base}", ""]
    own_rows, own_notes = [], []
    for run in (a, b):
        own = run["own"]
        if run["last"] == base:
            own_notes.append(f"- {run['label']}: only iteration {base} was evaluated: no change of its own.")
        elif own is None:
            own_notes.append(f"- {run['label']}: iteration {base} (the initial model) was not evaluated.")
        elif "reason" in own:
            own_notes.append(f"- {run['label']}: not compared, {own['reason']}.")
        else:
            own_rows += [[run["label"], f"{base} → {run['last']}", *row]
                         for row in comparison_rows(own["splits"], own["task_metric"])]
    if own_rows:
        lines += table(
            ["run", "iterations", "split", "metric", f"iter {base} mean", "last mean",
             f"difference [{paired.CONFIDENCE:.0%} CI]", "verdict", "tasks paired"], own_rows)
        lines.append("")
    lines += own_notes
    notes = [f"- {n}" for n in data["notes"]]
    if compared["unsplit"]:
        notes.append(f"- {paired.n_tasks(compared['unsplit'])} not in either task file: left out of the splits.")
    if notes:
        lines += ["", "## Notes", "", *notes]
    return "\n".join(lines).rstrip() + "\n"


def write_compare(run_a: str | Path, run_b: str | Path, output_dir: str | Path | None = None) -> Path:
    """Compare two runs and write compare.md (atomically); returns its path."""
    data = compare_runs(run_a, run_b)
    if output_dir is None:
        output_dir = Path(run_b) / "report" / f"compare_{Path(run_a).resolve().name}"
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / COMPARE_FILE
    with atomic_file(path) as f:
        f.write(render_compare(data))
    logger.info("wrote %s", path)
    return path
