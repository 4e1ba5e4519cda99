"""Continuing conversations into multi-turn contexts (CollabLLM's data building), and the task files they start from."""

import re

from collabloop.records import Rewarded
from simulate.openings import continue_conversation

PROMPT = [{"role": "user", "content": "I need a sum"}]


def future(*contents, error=None, terminated=False):
    roles = ["user", "assistant"]
    return {"messages": [{"role": roles[i % 2], "content": c} for i, c in enumerate(contents)],
            "terminated": terminated, "error": error}


def record(rewards, futures, turn=0):
    return Rewarded(id=f"t1/turn{turn}", task_id="t1", prompt=PROMPT, turn=turn,
                    responses=[f"reply {k}" for k in range(len(rewards))], gen={},
                    futures=futures, metrics=[{} for _ in rewards], rewards=rewards,
                    future_rewards=[[r] * len(f) for r, f in zip(rewards, futures)])


def test_continues_with_the_best_candidate_and_its_longest_future():
    rec = record([0.1, 0.9], [
        [future("from worst")],
        [future("short"), future("longest one", "answer"), future(error="simulator failed")],
    ])
    context, reason = continue_conversation(rec, max_turns=4)
    assert reason == "continued"
    assert context.id == "t1/turn1" and context.turn == 1 and context.task_id == "t1"
    assert context.prompt == [*PROMPT, {"role": "assistant", "content": "reply 1"},
                              {"role": "user", "content": "longest one"}]


def test_reasons_a_conversation_ends():
    assert continue_conversation(record([None, None], [[future("x")], [future("y")]]), 4) == (
        None, "no_scored_candidate")
    assert continue_conversation(record([1.0, 0.0], [[future(error="boom")], [future("y")]]), 4) == (
        None, "no_simulated_user_turn")
    ended = record([1.0, 0.0], [[future("[[TERMINATE CHAT]]", terminated=True)], [future("y")]])
    assert continue_conversation(ended, 4) == (None, "user_ended_conversation")
    assert continue_conversation(record([1.0, 0.0], [[future("more")], [future("y")]], turn=3), 4) == (
        None, "turn_limit")


def test_an_empty_task_file_is_refused_and_the_finished_output_kept(tmp_path):
    import pytest

    from collabloop.records import RecordError
    from collabloop.stage_configs import ContextsConfig
    from simulate.openings import run as make_contexts
    from tests.conftest import math_task, write_jsonl

    tasks = write_jsonl(tmp_path / "tasks.jsonl", [math_task(i, 2, i) for i in range(3)])  # openings given
    cfg = ContextsConfig(tasks_path=str(tasks), output_path=str(tmp_path / "out" / "contexts.jsonl"))
    assert make_contexts(cfg)["counts"]["records_out"] == 3
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    tasks.write_text("")
    with pytest.raises(RecordError, match=r"tasks.jsonl: field '<file>': holds no tasks"):
        make_contexts(cfg)
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before


def test_a_record_naming_a_missing_task_names_the_file_and_line(tmp_path):
    import pytest

    from collabloop.jsonl import read_records_with_tasks
    from collabloop.records import Context, RecordError
    from tests.conftest import math_task, write_jsonl

    tasks = write_jsonl(tmp_path / "tasks.jsonl", [math_task(0, 2, 3)])
    rows = [{"id": f"t{i}/turn0", "task_id": f"t{i}", "turn": 0, "prompt": PROMPT} for i in (0, 7)]
    contexts = write_jsonl(tmp_path / "contexts.jsonl", rows)
    with pytest.raises(RecordError, match=r"contexts.jsonl:2: field 'task_id': record 't7/turn0' names task 't7'"):
        read_records_with_tasks(contexts, Context, tasks)


def test_an_unknown_task_kind_is_refused_when_read_and_the_finished_output_kept(tmp_path):
    """A kind nothing checks ("poetry??") is refused at read time, naming the known kinds, before the stage
    calls the simulator or touches its earlier output; a kind registered first is read."""
    import json

    import pytest

    from collabloop import task_kinds
    from collabloop.jsonl import read_tasks
    from collabloop.records import RecordError
    from collabloop.stage_configs import ContextsConfig
    from simulate.openings import run as make_contexts
    from tests.conftest import math_task, write_jsonl

    rows = [math_task(i, 2, i) for i in range(3)]
    tasks = write_jsonl(tmp_path / "tasks.jsonl", rows)
    cfg = ContextsConfig(tasks_path=str(tasks), output_path=str(tmp_path / "out" / "contexts.jsonl"))
    assert make_contexts(cfg)["counts"]["records_out"] == 3
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    rows[1]["task"] = "poetry??"
    tasks.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(RecordError, match=r"tasks.jsonl:2: field 'task': unknown task kind 'poetry\?\?'; "
                                          r"the known kinds are \['code', 'doc', 'math'\]"):
        make_contexts(cfg)
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before

    rows[1]["task"] = "poetry"
    path = write_jsonl(tmp_path / "poems.jsonl", rows)
    with pytest.raises(RecordError, match=r"poems.jsonl:2: field 'task': unknown task kind 'poetry'"):
        read_tasks(path)
    try:
        task_kinds.register_task_kind(task_kinds.TaskKind("poetry", "a poem in a given form", "bleu"))
        assert [t.task for t in read_tasks(path)] == ["math", "poetry", "math"]
    finally:
        task_kinds.TASK_KINDS.pop("poetry", None)


def test_task_lines_and_texts_beyond_the_limits_are_refused_before_they_are_held(tmp_path):
    """A 20 MB single-line task file is refused by its line number with a few MB of memory, not read whole;
    a goal beyond the text limit is refused by its field, as is a file that is not UTF-8."""
    import json
    import tracemalloc

    import pytest

    from collabloop.jsonl import read_tasks
    from collabloop.records import MAX_TASK_LINE_BYTES, MAX_TASK_TEXT_CHARS, RecordError
    from tests.conftest import math_task, write_jsonl

    good = math_task(0, 2, 3)
    huge = {**math_task(1, 2, 3), "goal": "x" * (20 * 2**20)}
    path = tmp_path / "huge.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(huge) + "\n")
    tracemalloc.start()
    with pytest.raises(RecordError, match=rf"huge.jsonl:2: field '<line>': longer than {MAX_TASK_LINE_BYTES} "
                                          r"bytes \(COLLABLOOP_MAX_TASK_LINE_BYTES raises the limit\)"):
        read_tasks(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 * MAX_TASK_LINE_BYTES, peak

    long_goal = {**math_task(1, 2, 3), "goal": "y" * (MAX_TASK_TEXT_CHARS + 1)}
    long_opening = math_task(2, 2, 3)
    long_opening["prompt"][0]["content"] = "z" * (MAX_TASK_TEXT_CHARS + 1)
    for row, field in ((long_goal, "goal"), (long_opening, "prompt[0].content")):
        path = write_jsonl(tmp_path / "long.jsonl", [good, row])
        with pytest.raises(RecordError, match=rf"long.jsonl:2: field '{re.escape(field)}': "
                                              rf"{MAX_TASK_TEXT_CHARS + 1} characters, more than"):
            read_tasks(path)

    path = tmp_path / "latin1.jsonl"
    path.write_bytes((json.dumps(good) + "\n").encode() + b'{"id": "caf\xe9"}\n')
    with pytest.raises(RecordError, match=r"latin1.jsonl:2: field '<line>': not UTF-8 \(byte 12\)"):
        read_tasks(path)


def test_tasks_per_iteration_opens_the_next_slice_each_iteration_and_every_held_out_task(tmp_path):
    from collabloop.jsonl import read_records
    from collabloop.records import Context
    from collabloop.stage_configs import ContextsConfig
    from simulate.openings import run as make_contexts
    from tests.conftest import math_task, write_jsonl

    tasks = write_jsonl(tmp_path / "tasks.jsonl", [math_task(i, 2, i) for i in range(5)])  # openings given
    opened = {}
    for iteration in (0, 1, 2, 3):
        out = tmp_path / f"iter_{iteration}" / "contexts.jsonl"
        make_contexts(ContextsConfig(tasks_path=str(tasks), output_path=str(out), iteration=iteration,
                                     tasks_per_iteration=2))
        opened[iteration] = [c.task_id for c in read_records(out, Context)]
    ids = [f"t{i}" for i in range(5)]
    assert opened[0] == ids  # the held-out openings: every task
    assert [opened[i] for i in (1, 2, 3)] == [ids[0:2], ids[2:4], [ids[4], ids[0]]]  # the next 2, around the end
