"""A task kind is one object, added in one module; a metric's direction is declared with the metric.

The `sql` kind of tests/plugins/sql_kind.py is a user's own kind: one module registers it and its metric,
the run YAML names that module in loop.plugins, and every stage process sees it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from collabloop import paired
from collabloop.config import ConfigError, parse_config
from collabloop.loop_config import LoopConfig
from collabloop.metric_registry import METRICS
from collabloop.metrics import MetricResources, ScoringItem, direction, get_metric, states_answer
from collabloop.records import RecordError, Task
from collabloop.report.markdown import _verdict
from collabloop.task_kinds import TASK_KINDS, TaskKind, kind_scored_by, register_task_kind
from tests.conftest import PYTHON, REPO, math_task, read_jsonl, write_jsonl

PLUGINS = REPO / "tests" / "plugins"
SQL_TASKS = [
    {"id": f"q{i}", "task": "sql", "goal": f"You want the names of the users older than {age}.",
     "reference": f"SELECT name FROM users WHERE age > {age}", "metadata": {"dialect": "sqlite"},
     "prompt": [{"role": "user", "content": "Which users are old?"}]}
    for i, age in enumerate((30, 40, 50))
]


def run_yaml(tmp_path, plugins: list[str], **sections) -> str:
    import yaml

    path = tmp_path / "run.yaml"
    loop = {"plugins": plugins, "run_dir": str(tmp_path / "run"), "train_tasks": str(tmp_path / "sql.jsonl"),
            **sections.pop("loop", {})}
    path.write_text(yaml.safe_dump({"loop": loop, **sections}))
    return str(path)


@pytest.fixture
def sql_kind(tmp_path, monkeypatch):
    """The plugin loaded as a stage loads it (through its run YAML); unregistered after the test."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    try:
        parse_config(LoopConfig, "loop", ["--config", run_yaml(tmp_path, ["sql_kind"])])
        yield sys.modules["sql_kind"]
    finally:
        TASK_KINDS.pop("sql", None)
        METRICS.pop("sql_match", None)
        sys.modules.pop("sql_kind", None)


def stage_env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(PLUGINS)])}


def test_a_kind_of_ones_own_validates_reads_its_answer_and_heads_the_report(sql_kind, tmp_path):
    from collabloop.estimate import task_set
    from collabloop.jsonl import read_tasks

    tasks = read_tasks(write_jsonl(tmp_path / "sql.jsonl", SQL_TASKS))
    assert [t.task for t in tasks] == ["sql"] * 3
    # The kind's own record check, named by file, line and field.
    bad = write_jsonl(tmp_path / "bad.jsonl", [SQL_TASKS[0], {**SQL_TASKS[1], "metadata": {}}])
    with pytest.raises(RecordError, match=r"bad.jsonl:2: field 'metadata.dialect': expected the SQL dialect"):
        read_tasks(bad)

    task = tasks[0]
    ask = {"role": "assistant", "content": "Older than what age?"}
    answer = {"role": "assistant", "content": "Here it is:\n```sql\nselect name from users\nwhere age > 30;\n```"}
    assert not states_answer(task, ask, task.prompt)
    assert states_answer(task, answer, task.prompt)  # so end_on_answer ends a conversation of this kind too
    assert sql_kind.SQL.ends_on_answer

    wrong = {"role": "assistant", "content": "```sql\nSELECT name FROM users\n```"}
    items = [ScoringItem(task, task.prompt, [ask, {"role": "user", "content": "30"}, answer]),
             ScoringItem(task, task.prompt, [answer, {"role": "user", "content": "Only the names?"}, wrong]),
             ScoringItem(task, task.prompt, [ask])]
    assert [v.value for v in get_metric("sql_match")(items, MetricResources())] == [1.0, 0.0, 0.0]
    # The generic accuracy reads the answer through the kind as well.
    assert [v.value for v in get_metric("accuracy")(items, MetricResources())] == [1.0, 0.0, 0.0]

    # The report's headline metric and the estimate's assumed sizes come from the kind.
    assert paired.task_metric(["interactivity", "sql_match", "token_amount"]) == "sql_match"
    assert paired.task_metric(["interactivity", "accuracy", "sql_match"]) == "accuracy"  # built-ins first
    assert kind_scored_by({"interactivity": 1.0, "sql_match": 1.0}) is sql_kind.SQL
    assumed = task_set(str(tmp_path / "not_here.jsonl"), None, sql_kind.SQL, "eval")
    assert (assumed.count, assumed.goal_tokens, assumed.assumed) == (321, 80, True)
    assert direction("sql_match") == 1.0


def test_a_kind_is_registered_once_and_checked_when_made():
    math = TASK_KINDS["math"]
    assert register_task_kind(math) is math  # the same kind again changes nothing
    with pytest.raises(ValueError, match="registered twice"):
        register_task_kind(TaskKind("math", "another math", "judge_accuracy"))
    with pytest.raises(ValueError, match="assumed_eval_tasks must be a positive whole number"):
        TaskKind("x", "an x", "accuracy", assumed_eval_tasks=0)
    # The built-in kinds, as the rest of the pipeline reads them.
    assert {k: TASK_KINDS[k].task_metric for k in ("math", "code", "doc")} == {
        "math": "accuracy", "code": "pass_rate", "doc": "bleu"}
    assert [k for k in ("math", "code", "doc") if TASK_KINDS[k].ends_on_answer] == ["math"]
    assert Task(**math_task(0, 2, 3)).task == "math"


def test_every_stage_process_sees_the_plugins_of_its_run_yaml(tmp_path):
    """A record stage, in its own process, reads sql tasks only when the run YAML names the plugin; the cost
    estimate sizes a missing held-out file by the kind whose metric the reward weighs."""
    write_jsonl(tmp_path / "sql.jsonl", SQL_TASKS)
    stage = [PYTHON, "simulate/make_contexts.py", "--tasks_path", str(tmp_path / "sql.jsonl"),
             "--output_path", str(tmp_path / "contexts.jsonl")]

    without = subprocess.run([*stage, "--config", run_yaml(tmp_path, [])], cwd=REPO, env=stage_env(),
                             capture_output=True, text=True, timeout=300)
    assert without.returncode != 0 and "unknown task kind 'sql'" in without.stderr + without.stdout

    config = run_yaml(tmp_path, ["sql_kind"], loop={"eval_tasks": str(tmp_path / "held_out_not_here.jsonl")},
                      annotate={"metric_weights": {"sql_match": 1.0, "interactivity": 1.0}},
                      evaluate={"metrics": ["sql_match", "interactivity"]})
    made = subprocess.run([*stage, "--config", config], cwd=REPO, env=stage_env(), capture_output=True, text=True,
                          timeout=300)
    assert made.returncode == 0, made.stderr[-3000:]
    assert [c["task_id"] for c in read_jsonl(tmp_path / "contexts.jsonl")] == ["q0", "q1", "q2"]

    estimate = subprocess.run([PYTHON, "-m", "collabloop.loop", "estimate", "--config", config], cwd=REPO,
                              env=stage_env(), capture_output=True, text=True, timeout=300)
    assert estimate.returncode == 0, estimate.stderr[-3000:]
    assert "- 3 training contexts an iteration" in estimate.stdout
    assert "- evaluation: 321 held-out tasks" in estimate.stdout


def test_a_plugin_that_does_not_import_is_named_with_its_yaml(tmp_path):
    config = run_yaml(tmp_path, ["no_such_plugin_module"])
    with pytest.raises(ConfigError, match=r"run.yaml, section 'loop': plugin module 'no_such_plugin_module' could "
                                          r"not be imported \(ModuleNotFoundError"):
        parse_config(LoopConfig, "loop", ["--config", config])
    with pytest.raises(ConfigError, match="'plugins' must be a list of module names"):
        parse_config(LoopConfig, "loop", ["--config", run_yaml(tmp_path, [""])])


def test_a_metric_declares_its_direction_and_the_report_reads_it_not_the_weight():
    assert METRICS["token_amount"].higher_is_better is False
    assert all(METRICS[m].higher_is_better for m in ("accuracy", "pass_rate", "bleu", "interactivity",
                                                      "judge_accuracy", "rm_score"))
    assert METRICS["ask_rate"].higher_is_better is None  # right on one split of tasks, a detour on the other
    assert METRICS["pass_rate"].needs_sandbox and METRICS["rm_score"].needs_reward_model
    first = {"mean": 300.0, "ci_low": 280.0, "ci_high": 320.0}
    last = {"mean": 200.0, "ci_low": 180.0, "ci_high": 220.0}
    # Fewer tokens is better whatever the sign (or absence) of token_amount's weight in the reward: the report
    # takes no weight at all.
    assert _verdict(first, last, "token_amount") == "better"
    assert _verdict(last, first, "token_amount") == "worse"
    assert _verdict(first, last, "accuracy") == "worse"
    assert _verdict(first, last, "turns") == "lower (no declared direction)"
    c = {"mean": -100.0, "ci_low": -120.0, "ci_high": -80.0, "n": 8}
    assert paired.verdict(c, "token_amount") == "better"
    assert paired.verdict(c, "ask_rate") == "lower (no declared direction)"
