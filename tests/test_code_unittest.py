"""BigCodeBench-style code tasks: unittest `TestCases` run by pass_rate in the sandbox's trusted harness.

The shipped tasks (data/tasks/code_unittest.jsonl) score their canonical solutions 1 and empty or stub ones
0; the hostile corpus of tests/test_sandbox.py scores 0 against them too; a read-only library folder lets
tests and code import third-party packages; the importer turns BigCodeBench rows into such tasks and
refuses one whose tests cannot pass its own solution.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy

from collabloop.import_collabllm import check_code_tasks, convert
from collabloop.jsonl import read_tasks
from collabloop.metrics import MetricResources, ScoringItem, get_metric
from collabloop.records import Task
from collabloop.sandbox import SandboxLimits
from tests.test_sandbox import HOSTILE

REPO = Path(__file__).resolve().parent.parent
TASKS = read_tasks(REPO / "data" / "tasks" / "code_unittest.jsonl")
LIMITS = SandboxLimits(timeout_s=20)
SITE_PACKAGES = str(Path(numpy.__file__).resolve().parent.parent)


def reply(task: Task, code: str) -> ScoringItem:
    return ScoringItem(task=task, history=[{"role": "user", "content": "help"}],
                       window=[{"role": "assistant", "content": f"Here:\n```python\n{code}\n```"}])


def pass_rate(items: list[ScoringItem], **options) -> list[float | None]:
    options = {"sandbox_limits": LIMITS, "sandbox_workers": 2, **options}
    return [v.value for v in get_metric("pass_rate")(items, MetricResources(options=options))]


def test_canonical_solutions_pass_and_empty_or_stub_ones_do_not():
    items = [reply(t, t.metadata["canonical_solution"]) for t in TASKS]
    items += [reply(t, "") for t in TASKS[:2]] + [reply(t, t.metadata["signature"] + "    pass\n") for t in TASKS]
    assert pass_rate(items) == [1.0] * len(TASKS) + [0.0] * 2 + [0.0] * len(TASKS)


def test_the_hostile_corpus_scores_zero_against_unittest_tasks():
    task = TASKS[0]
    entry, prompt = task.metadata["entry_point"], task.metadata["signature"]
    items = [reply(task, code.replace("PROMPT", prompt).replace("ENTRY", entry)) for _, code in HOSTILE.values()]
    assert pass_rate(items, sandbox_workers=4, sandbox_limits=SandboxLimits(timeout_s=5)) == [0.0] * len(items)


NUMPY_TASK = Task(
    id="np-mean", task="code", goal="The mean of a list, as a float.", prompt=None,
    reference="import unittest\nimport numpy as np\n\n\nclass TestCases(unittest.TestCase):\n"
              "    def test_mean(self):\n        self.assertEqual(task_func([1, 2, 6]), float(np.mean([1, 2, 6])))\n",
    metadata={"entry_point": "task_func"},
)


def test_a_library_folder_lets_tests_and_code_import_third_party_packages():
    code = "import numpy as np\n\ndef task_func(xs):\n    return float(np.mean(xs))\n"
    assert pass_rate([reply(NUMPY_TASK, code)]) == [0.0]  # the sandbox holds the standard library only
    assert pass_rate([reply(NUMPY_TASK, code)], sandbox_libraries=SITE_PACKAGES) == [1.0]


def bigcodebench_row(conv_id: int, answer: str) -> dict:
    task = TASKS[0]
    completion = {"dataset": "bigcodebench", "task_id": f"BigCodeBench/{conv_id}", "test": task.reference,
                  "entry_point": "task_func", "answer": answer}
    return {"prompt": [{"role": "user", "content": "count my words"}], "completion": "Which text?",
            "conv_id": conv_id, "score": 0.5, "turn_id": 1, "single_turn_prompt": task.goal,
            "single_turn_completion": json.dumps(completion),
            "single_turn_metadata": {"task_id": f"BigCodeBench/{conv_id}", "entry_point": "task_func",
                                     "test": task.reference, "extraction_requirement": "the code"}}


def test_bigcodebench_rows_import_as_tasks_that_score_and_a_task_that_cannot_is_refused(tmp_path):
    good, broken = TASKS[0].metadata["canonical_solution"], "def task_func(text):\n    return {}\n"
    tasks, *_, counts = convert([bigcodebench_row(1, good), bigcodebench_row(2, broken)], "bcb.jsonl", "code")
    assert tasks[0].reference == TASKS[0].reference and tasks[0].metadata["entry_point"] == "task_func"
    assert "test" not in tasks[0].metadata and tasks[0].metadata["canonical_solution"] == good
    assert pass_rate([reply(tasks[0], good), reply(tasks[0], broken)]) == [1.0, 0.0]
    kept, refused = check_code_tasks(tasks, None, counts)
    assert [t.id for t in kept] == ["bcb-1"] and [r["id"] for r in refused] == ["bcb-2"]
    assert "does not pass its tests" in refused[0]["reason"] and counts["tasks_refused_tests_cannot_run"] == 1

    rows = tmp_path / "bcb.jsonl"
    rows.write_text("".join(json.dumps(bigcodebench_row(i, a)) + "\n" for i, a in ((1, good), (2, broken))))
    run = subprocess.run([sys.executable, "-m", "collabloop.import_collabllm", "--input", str(rows), "--task", "code",
                          "--out_dir", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stderr
    assert [t.id for t in read_tasks(tmp_path / "out" / "tasks.jsonl")] == ["bcb-1"]
    assert [json.loads(line)["id"] for line in (tmp_path / "out" / "refused.jsonl").read_text().splitlines()] == [
        "bcb-2"]
    assert "tasks_refused_tests_cannot_run=1" in run.stdout
