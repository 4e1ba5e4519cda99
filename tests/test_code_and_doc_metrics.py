"""pass_rate in the sandbox on real HumanEval problems, hostile code contained; BLEU known values."""

from __future__ import annotations

import os
import socket
import subprocess
import threading

import pytest

from collabloop.metrics import MetricResources, ScoringItem, extract_code, get_metric
from collabloop.records import Task
from collabloop.sandbox import SandboxLimits, run_python
from collabloop.tasksets import humaneval_problems, humaneval_task


@pytest.fixture(scope="module")
def problem():
    return humaneval_problems()[0]  # HumanEval/0: has_close_elements


def code_item(task: Task, code: str | None, chat: str = "Here you go:") -> ScoringItem:
    content = chat if code is None else f"{chat}\n```python\n{code}\n```"
    return ScoringItem(task=task, history=[{"role": "user", "content": "help"}],
                       window=[{"role": "assistant", "content": content}])


def score(items, **options):
    return [v.value for v in get_metric("pass_rate")(items, MetricResources(options=options))]


def test_pass_rate_right_and_wrong_code(problem):
    task = humaneval_task(problem)
    right = problem["prompt"] + problem["canonical_solution"]
    wrong = problem["prompt"] + "    return False\n"
    assert score([code_item(task, right), code_item(task, wrong), code_item(task, None)]) == [1.0, 0.0, 0.0]


def test_extract_code_takes_the_last_block_of_the_last_message_with_code():
    window = [
        {"role": "assistant", "content": "```python\nx = 1\n```\nor\n```py\nx = 2\n```"},
        {"role": "user", "content": "thanks"},
        {"role": "assistant", "content": "You're welcome."},
    ]
    assert extract_code(window) == "x = 2\n"


HOSTILE = {
    "endless loop": "while True:\n    pass",
    "fork bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
    "huge allocation": "x = bytearray(8 * 1024 ** 3)\nx[-1] = 1",
}


# The two that wait out the sandbox's timeout are in the full run only.
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in ("fork bomb", "endless loop") else n
                                  for n in sorted(HOSTILE)])
def test_hostile_code_is_contained_and_scores_zero(problem, name):
    task = humaneval_task(problem)
    code = problem["prompt"] + problem["canonical_solution"] + "\n" + HOSTILE[name]
    assert score([code_item(task, code)], sandbox_limits=SandboxLimits(timeout_s=3)) == [0.0]
    assert subprocess.run(["true"]).returncode == 0  # the host can still start processes


def test_network_is_unreachable_from_the_sandbox():
    connections = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(4)
    port = server.getsockname()[1]

    def accept():
        try:
            connections.append(server.accept())
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    result = run_python(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)",
                        SandboxLimits(timeout_s=5))
    thread.join()
    server.close()
    assert result.status == "fail" and "unreachable" in result.stderr.lower()
    assert connections == []


def test_writes_outside_the_sandbox_folder_do_not_reach_the_host(tmp_path):
    targets = [
        str(tmp_path / "escaped.txt"),  # under the host's /tmp: hidden by the sandbox's own tmpfs
        os.path.abspath("ESCAPED_FROM_SANDBOX.txt"),  # the repository
        "/ESCAPED_FROM_SANDBOX.txt",  # a root-owned folder
    ]
    program = "".join(
        f"try:\n    open({path!r}, 'w').write('x')\n    print('WROTE')\n"
        "except OSError as e:\n    print(type(e).__name__)\n"
        for path in targets
    ) + "open('inside.txt', 'w').write('fine')\n"
    result = run_python(program)
    assert result.status == "pass", result.stderr  # its own folder is writable
    # Each outside write fails: the path is hidden (FileNotFoundError) or not writable (PermissionError).
    assert len(result.stdout.split()) == 3 and "WROTE" not in result.stdout, result.stdout
    assert not any(os.path.exists(path) for path in targets)


def test_bleu_is_word_level_with_known_values():
    task = Task(id="d", task="doc", goal="g", reference="The library is closed on Monday for repairs.")
    items = [
        ScoringItem(task, [], [{"role": "assistant", "content": "The library is closed on Monday for repairs."}]),
        ScoringItem(task, [], [
            {"role": "assistant", "content": "Here it is:\n```\nThe library is closed on Monday for repairs.\n```"},
        ]),
        ScoringItem(task, [], [{"role": "assistant", "content": "Bananas are yellow."}]),
        ScoringItem(task, [], [{"role": "user", "content": "hi"}]),
    ]
    values = [v.value for v in get_metric("bleu")(items, MetricResources())]
    assert values[0] == pytest.approx(1.0) and values[1] == pytest.approx(1.0)
    assert values[2] == pytest.approx(0.0, abs=0.05)
    assert values[3] == 0.0
    # Word level: a reordered sentence keeps its words but loses most higher-order n-grams.
    shuffled = ScoringItem(task, [], [{"role": "assistant", "content": "repairs for Monday on closed is library The."}])
    assert get_metric("bleu")([shuffled], MetricResources())[0].value < 0.3
