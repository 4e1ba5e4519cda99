"""The report's collaboration figures, split by opening, and `--compare`, on small run folders written here.

The example is built so the answer is known: per task the values of the two
iterations differ by a constant or by two values twice each, whose 95%
percentile bootstrap interval is exactly [smaller, larger] (a resample of four
tasks is all one value with chance 1/16 > 2.5%; see tests/test_paired.py).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from collabloop.config import ConfigError
from collabloop.jsonl import read_records
from collabloop.records import EvalConversation, RecordError
from collabloop.report import collect, main, write_compare, write_report
from tests.conftest import REPO, math_task, write_jsonl
from tests.test_report import _meta, _row, _section, _write_iteration, _write_json

UNDER, COMPLETE = ["u0", "u1", "u2", "u3"], ["c0", "c1", "c2", "c3"]


def _both(values: list[float]) -> dict[str, list[float]]:
    return {t: list(values) for t in UNDER + COMPLETE}


# Iteration 0 (the initial model): two conversations per task. {metric: {task: [value of each conversation]}}
BASE = {
    "accuracy": {**{t: [0.0, 0.0] for t in UNDER}, **{t: [1.0, 0.0] for t in COMPLETE}},
    "ask_rate": _both([0.0, 0.0]),
    "token_amount": _both([300.0, 300.0]),
    "turns": _both([1.0, 1.0]),
}
# The trained model asks on underspecified openings and solves more of them; complete ones move by +-0.5.
# Per-task differences: underspecified accuracy 1, .5, 1, .5 (mean .75, interval [.5, 1]); complete accuracy
# +.5, -.5, +.5, -.5 (0, [-.5, +.5]); underspecified ask_rate 1, 1, .5, .5; tokens +100 / -100; turns +2 / 0.
TRAINED = {
    "accuracy": {"u0": [1.0, 1.0], "u1": [1.0, 0.0], "u2": [1.0, 1.0], "u3": [1.0, 0.0],
                 "c0": [1.0, 1.0], "c1": [0.0, 0.0], "c2": [1.0, 1.0], "c3": [0.0, 0.0]},
    "ask_rate": {"u0": [1.0, 1.0], "u1": [1.0, 1.0], "u2": [1.0, 0.0], "u3": [1.0, 0.0],
                 **{t: [0.0, 0.0] for t in COMPLETE}},
    "token_amount": {**{t: [400.0, 400.0] for t in UNDER}, **{t: [200.0, 200.0] for t in COMPLETE}},
    "turns": {**{t: [3.0, 3.0] for t in UNDER}, **{t: [1.0, 1.0] for t in COMPLETE}},
}

HEADLINE = (
    "**Headline:** iteration 2 vs iteration 0, paired by task: underspecified (4 tasks): accuracy 0.000 -> 0.750, "
    "paired +0.750 [95% +0.500, +1.000] better; asks 0% -> 75%; complete (4 tasks): accuracy 0.500 -> 0.500, "
    "paired +0.000 [95% -0.500, +0.500] within noise; asks 0% -> 0%."
)
# The split rows of iteration 2 against iteration 0: split, metric, means, difference [CI], verdict, tasks paired.
SPLIT_ROWS = [
    "underspecified | accuracy | 0.000 | 0.750 | +0.750 [+0.500, +1.000] | better | 4",
    "underspecified | ask_rate | 0.000 | 0.750 | +0.750 [+0.500, +1.000] | higher | 4",
    "underspecified | token_amount | 300.0 | 400.0 | +100.0 [+100.0, +100.0] | more | 4",
    "underspecified | turns | 1.000 | 3.000 | +2.000 [+2.000, +2.000] | more | 4",
    "complete | accuracy | 0.500 | 0.500 | +0.000 [-0.500, +0.500] | within noise | 4",
    "complete | ask_rate | 0.000 | 0.000 | +0.000 [+0.000, +0.000] | within noise | 4",
    "complete | token_amount | 300.0 | 200.0 | -100.0 [-100.0, -100.0] | fewer | 4",
    "complete | turns | 1.000 | 1.000 | +0.000 [+0.000, +0.000] | within noise | 4",
]


def _write_tasks(path: Path, ids: list[str], underspecified: dict[str, object] | None = None) -> Path:
    """A real task file; `underspecified` gives metadata.underspecified per task id (absent when not named)."""
    rows = []
    for k, task_id in enumerate(ids):
        task = {**math_task(k, 2 + k, 3), "id": task_id}
        if underspecified is not None and task_id in underspecified:
            task["metadata"] = {"underspecified": underspecified[task_id]}
        rows.append(task)
    return write_jsonl(path, rows)


def _split_tasks(path: Path, extra: list[str] = ()) -> Path:
    # c0 says false, the other complete tasks have no field: both are "stated in full".
    return _write_tasks(path, UNDER + COMPLETE + list(extra),
                        {**{t: True for t in UNDER}, "c0": False})


def _write_eval(iter_dir: Path, iteration: int, values: dict, tasks_path: Path, counts: dict | None = None) -> None:
    """conversations.jsonl ("<task>/sample<j>"), summary.json and, with `counts`, conversations.meta.json."""
    tasks = {t: len(v) for per_task in values.values() for t, v in per_task.items()}
    rows = [
        {"id": f"{t}/sample{j}", "task_id": t, "terminated": True, "error": None,
         "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
         "metrics": {m: per_task[t][j] for m, per_task in values.items()}, "metric_errors": {}}
        for t, k in tasks.items() for j in range(k)
    ]
    eval_dir = iter_dir / "eval"
    write_jsonl(eval_dir / "conversations.jsonl", rows)
    means = {m: math.fsum(v for vs in per_task.values() for v in vs) / len(rows) for m, per_task in values.items()}
    _write_json(eval_dir / "summary.json", {
        "iteration": iteration, "model": "models/m", "tasks_path": str(tasks_path), "num_conversations": len(rows),
        "confidence": 0.95, "bootstrap_samples": 1000, "seed": 0,
        "metrics": {m: {"mean": x, "ci_low": x, "ci_high": x, "n": len(rows), "failed": 0} for m, x in means.items()},
    })
    if counts is not None:
        _write_json(eval_dir / "conversations.meta.json", _meta("evaluate", counts, 5.0))
    read_records(eval_dir / "conversations.jsonl", EvalConversation)  # what the evaluate stage writes


@pytest.fixture
def tasks_path(tmp_path) -> Path:
    return _split_tasks(tmp_path / "tasks" / "heldout.jsonl", extra=["c4"])


@pytest.fixture
def run_dir(tmp_path, tasks_path) -> Path:
    """Iterations 1 and 2 trained, 0 and 2 evaluated on the split task file; the simulated users counted."""
    run = tmp_path / "runs" / "multi"
    for i in (1, 2):
        _write_iteration(run / f"iter_{i}", i)
    # Iteration 1 is an older run's meta (no user counts): not shown. Iteration 2 counts what its users did.
    simulate = json.loads((run / "iter_2" / "simulations.meta.json").read_text())
    simulate["counts"].update(user_turns=20, user_revealed=5, user_terminated=4, user_drifted=1,
                              conversations_ended_on_answer=3)
    _write_json(run / "iter_2" / "simulations.meta.json", simulate)
    # The stages count with a Counter: a count never added to is absent, i.e. 0 where user turns were counted.
    _write_eval(run / "iter_0", 0, BASE, tasks_path, counts={"user_turns": 8, "user_terminated": 8})
    _write_eval(run / "iter_2", 2, TRAINED, tasks_path, counts={"conversations_ended_on_answer": 6})
    return run


def _rows(text: str, prefix: str) -> list[str]:
    """The table rows of `text` that start with `prefix`, without it and the closing bar."""
    return [line.removeprefix(prefix).removesuffix(" |") for line in text.splitlines() if line.startswith(prefix)]


def _split_rows(text: str, prefix: str) -> list[str]:
    return [row for row in _rows(text, prefix) if row.startswith(("underspecified | ", "complete | "))]


def test_split_figures_headline_and_simulated_user(run_dir, tasks_path, tmp_path, capsys):
    main(["--run_dir", str(run_dir), "--output_dir", str(tmp_path / "out")])
    printed_headline, printed_path = capsys.readouterr().out.strip().splitlines()
    report = tmp_path / "out" / "report.md"
    assert printed_path == str(report)
    text = report.read_text()
    assert text.splitlines()[2] == HEADLINE
    assert printed_headline == HEADLINE.replace("**", "")

    glance = _section(text, "## 1.")
    assert f"**By opening: underspecified vs complete.** Tasks of `{tasks_path}`" in glance
    assert _split_rows(glance, "| 2 | ") == SPLIT_ROWS
    # The unsplit paired table and the summary table are still there, over all 8 tasks.
    assert _row(glance, "| 2 | accuracy |").startswith("| 2 | accuracy | 0.250 | 0.625 | +0.375 [")
    assert "| metric | iter 0 | iter 2 | change 0 → 2 | verdict |" in glance

    collab = collect(run_dir)["collaboration"]
    assert collab["tasks_paths"] == [str(tmp_path / "tasks" / "heldout.jsonl")]
    assert collab["by_task"] == {**{t: "underspecified" for t in UNDER}, **{t: "complete" for t in COMPLETE},
                                 "c4": "complete"}
    under = collab["compared"][2]["splits"]["underspecified"]["accuracy"]
    assert (under["mean"], under["ci_low"], under["ci_high"], under["n"]) == (0.75, 0.5, 1.0, 4)
    assert (under["base_conversations"], under["other_conversations"]) == (8, 8)

    users = _section(text, "## 4.")
    assert "### Simulated user" in users
    assert _rows(users, "| 2 | simulate (training futures) | ") == ["20 | 5 (25%) | 4 (20%) | 1 (5%) | 3"]
    assert _rows(users, "| 0 | evaluate (held-out conversations) | ") == ["8 | 0 (0%) | 8 (100%) | 0 (0%) | 0"]
    assert _rows(users, "| 2 | evaluate (held-out conversations) | ") == ["— | — | — | — | 6"]
    assert not _rows(users, "| 1 | simulate (training futures) | "), "an older meta without user counts is not shown"


def test_without_the_split_the_report_is_as_before(run_dir, tasks_path, tmp_path):
    _write_tasks(tasks_path, UNDER + COMPLETE + ["c4"])  # the same tasks, none with metadata.underspecified
    text = write_report(run_dir, tmp_path / "out").read_text()
    assert text.splitlines()[2].startswith("**Headline:** accuracy: iteration 2 0.625 vs iteration 0 0.250, ")
    assert "By opening" not in text and "No split by opening" not in text
    assert collect(run_dir)["collaboration"]["by_task"] is None

    # A task file that is not there: the report says so and keeps the unsplit headline.
    tasks_path.unlink()
    text = write_report(run_dir, tmp_path / "out").read_text()
    assert text.splitlines()[2].startswith("**Headline:** accuracy: iteration 2 ")
    assert f"the task file {tasks_path} (multi/iter_0/eval/summary.json tasks_path) is not found" in text


def test_bad_split_field_names_the_file_line_and_field(run_dir, tasks_path):
    _write_tasks(tasks_path, UNDER + COMPLETE, {"u1": "yes"})
    with pytest.raises(RecordError, match=rf"{tasks_path}:2: field 'metadata.underspecified': expected "
                                          r"true or false, got 'yes'"):
        collect(run_dir)


def test_zero_iteration_run_reports_iteration_0_per_split(tmp_path, tasks_path):
    run = tmp_path / "runs" / "untrained"
    _write_eval(run / "iter_0", 0, BASE, tasks_path)
    text = write_report(run).read_text()
    assert text.splitlines()[2] == (
        "**Headline:** only iteration 0 (the initial model) was evaluated, nothing to compare: "
        "underspecified (4 tasks): accuracy 0.000, asks 0%; complete (4 tasks): accuracy 0.500, asks 0%.")
    glance = _section(text, "## 1.")
    assert "Only iteration 0 was evaluated" in glance and "Paired with iteration 0" not in glance
    assert _rows(glance, "| underspecified | ") == [
        "accuracy | 0.000 [0.000, 0.000] | 4 | 8", "ask_rate | 0.000 [0.000, 0.000] | 4 | 8",
        "token_amount | 300.0 [300.0, 300.0] | 4 | 8", "turns | 1.000 [1.000, 1.000] | 4 | 8"]
    # Complete tasks: every one 1 of 2 solved, so each task's mean is 0.5 and there is no spread over tasks.
    assert _rows(glance, "| complete | accuracy | ") == ["0.500 [0.500, 0.500] | 4 | 8"]
    assert "_No trained iterations._" in _section(text, "## 3.")
    assert "Simulated user" not in text  # no meta file holds user counts

    # Without the split: today's headline.
    _write_tasks(tasks_path, UNDER + COMPLETE)
    assert write_report(run).read_text().splitlines()[2] == (
        "**Headline:** only iteration 0 (the initial model) was evaluated: nothing to compare.")


def _single_turn_run(root: Path, tasks_path: Path) -> Path:
    """Run A: trained once, no better than the initial model; it also evaluated c4, which run B did not."""
    run = root / "runs" / "single"
    values = {m: {**per_task, "c4": per_task["c0"]} for m, per_task in BASE.items()}
    for i in (0, 1):
        _write_eval(run / f"iter_{i}", i, values, tasks_path)
    return run


def test_compare_end_to_end(run_dir, tasks_path, tmp_path):
    # B's iteration 0 did not evaluate c4: B − A pairs 8 tasks, c4 is left out and counted.
    run_a = _single_turn_run(tmp_path, tasks_path)
    result = subprocess.run([sys.executable, "-m", "collabloop.report", "--compare", str(run_a), str(run_dir)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    headline, path = result.stdout.strip().splitlines()
    assert Path(path) == run_dir / "report" / "compare_single" / "compare.md"
    text = Path(path).read_text()
    expected = (
        "Compare: B multi (iter 2) vs A single (iter 1) on 8 shared tasks, A -> B: underspecified (4 tasks): "
        "accuracy 0.000 -> 0.750, B - A +0.750 [95% +0.500, +1.000] better; asks 0% -> 75%; complete (4 tasks): "
        "accuracy 0.500 -> 0.500, B - A +0.000 [95% -0.500, +0.500] within noise; asks 0% -> 0%.")
    assert headline == expected
    assert text.splitlines()[:3] == ["# Run comparison: multi vs single", "", expected.replace(
        "Compare:", "**Compare:**")]
    assert "Both were evaluated on the same task file; 8 tasks shared (1 only in A, 0 only in B: left out)" in text
    # B − A per split is B's own change here, since A's last evaluation equals both runs' iteration 0.
    paired_rows = _section(text, "## B − A")
    assert "| split | metric | A mean | B mean | B − A [95% CI] | verdict | tasks paired |" in paired_rows
    assert _split_rows(paired_rows, "| ") == SPLIT_ROWS
    own = _section(text, "## Each run against its own iteration 0")
    assert _split_rows(own, "| B | 0 → 2 | ") == SPLIT_ROWS
    # A did not move; its complete split holds c4 as well.
    assert _rows(own, "| A | 0 → 1 | underspecified | accuracy | ") == [
        "0.000 | 0.000 | +0.000 [+0.000, +0.000] | within noise | 4"]
    assert _rows(own, "| A | 0 → 1 | complete | accuracy | ") == [
        "0.500 | 0.500 | +0.000 [+0.000, +0.000] | within noise | 5"]

    # --output_dir, through main: the same file elsewhere.
    out = write_compare(run_a, run_dir, tmp_path / "cmp")
    assert out == tmp_path / "cmp" / "compare.md" and out.read_text() == text


def test_compare_refuses_runs_without_evaluation_or_shared_tasks(run_dir, tmp_path):
    bare = tmp_path / "runs" / "bare"
    _write_iteration(bare / "iter_1", 1)
    with pytest.raises(FileNotFoundError, match=rf"{bare}: run A has no evaluated iteration"):
        main(["--compare", str(bare), str(run_dir)])

    other = tmp_path / "runs" / "other"
    other_tasks = _write_tasks(tmp_path / "tasks" / "other.jsonl", ["z0", "z1"])
    _write_eval(other / "iter_0", 0, {"accuracy": {"z0": [1.0], "z1": [0.0]}}, other_tasks)
    with pytest.raises(ConfigError, match=r"share no task id.*same held-out task file"):
        write_compare(run_dir, other, tmp_path / "cmp")
    assert not (tmp_path / "cmp").exists(), "no report for runs that do not pair"

    (run_dir / "iter_2" / "eval" / "conversations.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match=r"iter_2/eval/conversations\.jsonl: run B's last evaluation"):
        write_compare(other, run_dir, tmp_path / "cmp")
