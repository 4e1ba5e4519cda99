"""A corpus of malformed and hostile task files: each is refused when read, by file, line and field, before
a stage calls anything, and a complete earlier output is left byte for byte as it was."""

from __future__ import annotations

import json

import pytest

from collabloop.records import RecordError
from tests.conftest import math_task, write_jsonl

BASE = '{"id": "t1", "task": "math", "goal": "g", "reference": "5"'


def task_line(**fields) -> str:
    return json.dumps({"id": "t1", "task": "math", "goal": "g", "reference": "5", **fields})


# name -> (line 2 of the task file, the field the error names, a piece of the problem it states)
CORPUS = {
    "a list, not an object": ("[1, 2]", "<record>", "expected a JSON object, got list"),
    "a string, not an object": ('"just a string"', "<record>", "expected a JSON object, got str"),
    "null": ("null", "<record>", "expected a JSON object, got NoneType"),
    "nested 100,000 deep": ('{"id": ' + "[" * 100_000 + "]" * 100_000 + "}", "<line>", "nested too deeply"),
    "a byte-order mark": ("\ufeff" + task_line(), "<line>", "Unexpected UTF-8 BOM"),
    "a key named twice": (BASE + ', "goal": "hidden"}', "goal", "named twice in one object"),
    "an integer of 5000 digits": (BASE + ', "metadata": {"n": ' + "9" * 5000 + "}}", "<line>", "not readable"),
    "a number no float holds": (BASE + ', "metadata": {"x": 1e400}}', "<line>", "1e400 is not a JSON number"),
    "NaN": (BASE + ', "metadata": {"x": NaN}}', "<line>", "NaN is not a JSON number"),
    "a lone surrogate": ('{"id": "t1", "task": "math", "goal": "g\\ud800", "reference": "5"}', "<line>",
                         "lone UTF-16 surrogate"),
    "two objects on a line": (task_line() + " " + task_line(), "<line>", "Extra data"),
    "trailing garbage": (task_line() + " xyz", "<line>", "Extra data"),
    "an unknown field": (task_line(secret=1), "secret", "unknown field for a task record"),
    "an unknown kind": (task_line(task="poetry??"), "task", "unknown task kind 'poetry??'"),
    "a kind in other case": (task_line(task="Math"), "task", "unknown task kind 'Math'"),
    "a kind with a space": (task_line(task="math "), "task", "unknown task kind 'math '"),
    "a blank id": (task_line(id="   "), "id", "must not be empty"),
    "an id with a newline": (task_line(id="a\nb"), "id", "no control characters"),
    "an id with surrounding spaces": (task_line(id=" t1"), "id", "no surrounding spaces"),
    "a number as goal": (task_line(goal=5), "goal", "expected a string, got int"),
    "an empty goal": (task_line(goal=""), "goal", "must not be empty"),
    "a list as metadata": (task_line(metadata=[1]), "metadata", "expected an object, got list"),
    "code injected as entry point": (task_line(task="code", metadata={"entry_point": "f) or exit(0"}),
                                     "metadata.entry_point", "expected a Python function name"),
    "a number as entry point": (task_line(task="code", metadata={"entry_point": 5}), "metadata.entry_point",
                                "expected a Python function name"),
    "a tool message": (task_line(prompt=[{"role": "tool", "content": "x"}]), "prompt[0].role", "expected one of"),
    "no messages": (task_line(prompt=[]), "prompt", "must hold at least one message"),
    "content as a list": (task_line(prompt=[{"role": "user", "content": ["x"]}]), "prompt[0].content",
                          "expected a string, got list"),
    "a message with a name": (task_line(prompt=[{"role": "user", "content": "x", "name": "root"}]), "prompt[0]",
                              "unknown keys ['name']"),
    "an opening that ends with the assistant": (
        task_line(prompt=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]), "prompt",
        "must end with a user turn"),
    "a goal of 300,000 characters": (task_line(goal="x" * 300_000), "goal", "more than the 200000"),
    "a line of 2 MB": (task_line(reference="1" * 2_000_000), "<line>", "longer than 1048576 bytes"),
}


@pytest.mark.parametrize("name", list(CORPUS))
def test_a_hostile_task_file_is_refused_by_line_and_field_and_nothing_is_touched(tmp_path, name):
    from collabloop.jsonl import read_tasks
    from collabloop.stage_configs import ContextsConfig
    from simulate.openings import run as make_contexts

    line, field, problem = CORPUS[name]
    tasks = write_jsonl(tmp_path / "tasks.jsonl", [math_task(0, 2, 3)])
    cfg = ContextsConfig(tasks_path=str(tasks), output_path=str(tmp_path / "out" / "contexts.jsonl"))
    make_contexts(cfg)
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    with tasks.open("a", encoding="utf-8") as f:
        f.write(line + "\n")
    with pytest.raises(RecordError) as refused:
        read_tasks(tasks)
    assert refused.value.where == f"{tasks}:2" and refused.value.field_name == field, str(refused.value)
    assert problem in refused.value.problem, str(refused.value)
    with pytest.raises(RecordError):
        make_contexts(cfg)
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before


def test_what_the_corpus_allows_is_plain_text(tmp_path):
    """Blank lines (also CRLF ones), a NUL character and an emoji written as a surrogate pair are text a task
    may hold: they are read as written."""
    from collabloop.jsonl import read_tasks

    path = tmp_path / "tasks.jsonl"
    path.write_text(task_line() + "\r\n\r\n" + task_line(id="t2", goal="a\u0000b") + "\n"
                    + '{"id": "t3", "task": "math", "goal": "\\ud83d\\ude00", "reference": "5"}\n', newline="")
    tasks = read_tasks(path)
    assert [t.id for t in tasks] == ["t1", "t2", "t3"]
    assert tasks[1].goal == "a\u0000b" and tasks[2].goal == "\U0001F600"
