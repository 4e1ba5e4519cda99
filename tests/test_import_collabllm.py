"""The CollabLLM dataset importer on local files in their published schema."""

import json

import pytest

from collabloop.import_collabllm import convert, read_rows
from collabloop.jsonl import read_records, write_records
from collabloop.records import Context, Pair, RecordError, SFTExample, Task


def row(conv, turn, completion, score, prompt=None):
    prompt = prompt or [{"role": "user", "content": f"help me with problem {conv}"}]
    return {
        "prompt": prompt, "completion": completion, "conv_id": conv, "score": score, "turn_id": turn,
        "single_turn_prompt": f"Solve problem {conv}.", "single_turn_completion": "42",
        "single_turn_metadata": {"level": "Level 5", "type": "Algebra"},
        "sessions": [], "rewards": {"MR": [score]},
    }


ROWS = [
    row(7, 1, "Which variable?", 0.8),
    row(7, 1, "It is 41.", 0.2),
    row(7, 3, "So it is 42.", 0.9, prompt=[
        {"role": "user", "content": "help me with problem 7"}, {"role": "assistant", "content": "Which variable?"},
        {"role": "user", "content": "x"}]),
    row(7, 3, "Done.", 0.9, prompt=[
        {"role": "user", "content": "help me with problem 7"}, {"role": "assistant", "content": "Which variable?"},
        {"role": "user", "content": "x"}]),
    row(8, 1, "Only one candidate.", 0.5),
]


@pytest.mark.parametrize("kind", ["jsonl", "json", "parquet"])
def test_import_writes_valid_files(tmp_path, kind):
    path = tmp_path / f"data.{kind}"
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    elif kind == "json":
        path.write_text(json.dumps(ROWS))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(ROWS), path)
    tasks, contexts, pairs, sft, counts = convert(read_rows(path), str(path), "math")
    for name, records, cls in (("tasks", tasks, Task), ("contexts", contexts, Context), ("pairs", pairs, Pair),
                               ("sft", sft, SFTExample)):
        write_records(tmp_path / f"{name}.jsonl", records)
        assert len(read_records(tmp_path / f"{name}.jsonl", cls)) == len(records)
    assert [t.id for t in tasks] == ["data-7", "data-8"]  # namespaced by the file: two imports never collide
    assert tasks[0].goal == "Solve problem 7." and tasks[0].reference == "42"
    assert tasks[0].metadata["level"] == "Level 5"
    # The dataset's own opening, so the contexts stage takes it instead of having the simulator write one.
    assert tasks[0].prompt == [{"role": "user", "content": "help me with problem 7"}]
    assert [c.id for c in contexts] == ["data-7/turn1", "data-7/turn3", "data-8/turn1"]
    assert contexts[1].turn == 1
    assert len(pairs) == 1 and pairs[0].chosen[0]["content"] == "Which variable?"
    assert pairs[0].margin == pytest.approx(0.6)
    assert counts["pairs_dropped_tied"] == 1 and counts["pairs_dropped_single_completion"] == 1
    # SFT: each conversation's last turn, its best completion (ties: first row).
    assert sft[0].messages[-1] == {"role": "assistant", "content": "So it is 42."}
    assert len(sft[0].messages) == 4


def test_single_turn_rows_are_held_out_tasks_without_an_opening(tmp_path):
    test_rows = [{"single_turn_prompt": "What is 6 x 7?", "single_turn_completion": "\\boxed{42}",
                  "single_turn_metadata": {"level": "Level 1"}},
                 {"single_turn_prompt": "What is 2 + 2?", "single_turn_completion": "4"}]
    tasks, contexts, pairs, sft, counts = convert(test_rows, "math-hard-test.jsonl", "math", id_prefix="mh-test")
    assert [(t.id, t.goal, t.reference, t.prompt) for t in tasks] == [
        ("mh-test-row0", "What is 6 x 7?", "\\boxed{42}", None), ("mh-test-row1", "What is 2 + 2?", "4", None)]
    assert tasks[0].metadata == {"source": "math-hard-test.jsonl", "level": "Level 1"}
    assert (contexts, pairs, sft, counts["single_turn_rows"]) == ([], [], [], 2)
    write_records(tmp_path / "tasks.jsonl", tasks)
    assert read_records(tmp_path / "tasks.jsonl", Task) == tasks


def test_schema_errors_name_the_row_and_column(tmp_path):
    bad = dict(ROWS[0])
    del bad["single_turn_prompt"]
    with pytest.raises(RecordError, match=r"data.jsonl:row 1: field 'single_turn_prompt': missing"):
        convert([ROWS[1], bad], "data.jsonl", "math")
    with pytest.raises(RecordError, match=r"row 0: field 'score': expected a finite number"):
        convert([{**ROWS[0], "score": "high"}], "data.jsonl", "math")


def nested(rows: list[dict]) -> list[dict]:
    """The rows as CollabLLM's local nested export holds them: a conversation per object, each turn a prompt and
    its scored responses."""
    conversations: dict = {}
    for r in rows:
        conversation = conversations.setdefault(r["conv_id"], {
            **{k: r[k] for k in ("single_turn_prompt", "single_turn_completion", "single_turn_metadata")},
            "turns": {}})
        turn = conversation["turns"].setdefault(r["turn_id"], {"prompt": r["prompt"], "responses": []})
        turn["responses"].append({"completion": r["completion"], "score": r["score"]})
    return [{**c, "turns": list(c["turns"].values())} for c in conversations.values()]


@pytest.mark.parametrize("layout", ["list", "splits"])
def test_the_nested_export_imports_as_its_flat_rows_do(tmp_path, layout):
    flat = tmp_path / "data.jsonl"
    flat.write_text("".join(json.dumps({**r, "conv_id": 0 if r["conv_id"] == 7 else 1}) + "\n" for r in ROWS))
    conversations = nested(ROWS)
    path = tmp_path / "data.json"
    path.write_text(json.dumps(conversations if layout == "list" else
                               {"train": conversations[:1], "eval": conversations[1:]}))
    assert convert(read_rows(path), str(path), "math") == convert(read_rows(flat), str(path), "math")
    tasks, contexts, pairs, sft, _ = convert(read_rows(path), str(path), "math")
    assert [t.id for t in tasks] == ["data-0", "data-1"] and len(contexts) == 3
    assert pairs[0].chosen[0]["content"] == "Which variable?" and sft[0].messages[-1]["content"] == "So it is 42."

    del conversations[1]["turns"][0]["responses"][0]["score"]
    path.write_text(json.dumps(conversations))
    with pytest.raises(RecordError, match=r"data.json:conversation 1, turns\[0\], responses\[0\]: field 'score'"):
        read_rows(path)


def published_row(kind: str) -> dict:
    """One row of each published dataset, in its own form: math-hard's boxed solution, a Medium article, a
    BigCodeBench completion (JSON with its unittest tests and answer)."""
    from collabloop.jsonl import read_tasks
    from tests.conftest import REPO

    if kind == "math":
        question, completion = "Compute 6 x 7.", "We multiply: $6 \\cdot 7 = \\boxed{42}$."
    elif kind == "doc":
        question = "Please write an article in less than 500 words about: Rain"
        completion = "Rain falls on the quiet town.\nThe streets shine and the gutters sing."
    else:
        code_task = read_tasks(REPO / "data" / "tasks" / "code_unittest.jsonl")[0]
        question = code_task.goal
        completion = json.dumps({"dataset": "bigcodebench", "task_id": "BigCodeBench/1", "test": code_task.reference,
                                 "entry_point": "task_func", "answer": code_task.metadata["canonical_solution"]})
    return {**row(1, 1, "Could you say more?", 0.5), "single_turn_prompt": question,
            "single_turn_completion": completion, "single_turn_metadata": {}}


@pytest.mark.parametrize("kind, metric, right, wrong", [
    ("math", "accuracy", "So the answer is 42.", "So the answer is 41."),
    ("doc", "bleu", "Rain falls on the quiet town.\nThe streets shine and the gutters sing.", "Completely unrelated."),
    ("code", "pass_rate", None, "def task_func(text):\n    return {}\n"),
])
def test_imported_tasks_score_a_right_reply_1_and_a_wrong_one_0_by_their_task_metric(kind, metric, right, wrong):
    from collabloop.metrics import MetricResources, ScoringItem, get_metric

    tasks, contexts, *_ = convert([published_row(kind)], "published.jsonl", kind)
    task = tasks[0]
    right = right if right is not None else task.metadata["canonical_solution"]
    as_reply = (lambda text: f"```python\n{text}\n```") if kind == "code" else (lambda text: text)
    items = [ScoringItem(task=task, history=contexts[0].prompt, window=[{"role": "assistant", "content": as_reply(t)}])
             for t in (right, wrong)]
    values = [v.value for v in get_metric(metric)(items, MetricResources())]
    assert values == pytest.approx([1.0, 0.0], abs=0.01), (kind, values)  # BLEU's smoothing: 0.005 for no match
