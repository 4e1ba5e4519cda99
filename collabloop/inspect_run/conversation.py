"""One record of a stage file as a conversation to read: its task, prompt, candidates and their futures."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from collabloop.inspect_run.formatting import format_value as _num
from collabloop.inspect_run.kinds import InspectError, detect_kind, find_upstream_input
from collabloop.jsonl import read_records
from collabloop.records import RECORD_TYPES, Record, Rewarded, Task
from collabloop.stage import meta_path_for, read_meta

RULE_WIDTH_CHARS = 78


def load_record(path: str | Path, index: int | None = None, record_id: str | None = None) -> dict:
    """One record of a file by 0-based index or id: {"kind", "record", "index", "total"}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (--record/--id need a .jsonl file)")
    kind, _ = detect_kind(path, read_meta(meta_path_for(path)))
    records = read_records(path, RECORD_TYPES[kind])
    if record_id is not None:
        matches = [i for i, r in enumerate(records) if r.id == record_id]
        if not matches:
            raise InspectError(f"{path}: no record with id {record_id!r} among {len(records)} {kind} records")
        index = matches[0]
    elif index is None or not 0 <= index < len(records):
        raise InspectError(f"{path}: record index {index} is out of range; it holds {len(records)} records (0-based)")
    return {"kind": kind, "record": records[index], "index": index, "total": len(records)}


def find_task(path: str | Path, record: Record, tasks_path: str | Path | None = None) -> tuple[Task | None, str]:
    """The task behind a record and where it came from, or (None, why not)."""
    if isinstance(record, Task):
        return record, f"the record itself ({path})"
    task_id = getattr(record, "task_id", None)
    if task_id is None:
        # Pairs carry no task_id, but keep the id of the rewards record they were built from.
        rewards_path = find_upstream_input(path, "rewards")
        if rewards_path is None:
            return None, "omitted: this record has no task_id and no rewards file is named in a .meta.json"
        source = next((r for r in read_records(rewards_path, Rewarded) if r.id == record.id), None)
        if source is None:
            return None, f"omitted: no record {record.id!r} in {rewards_path}"
        task_id = source.task_id
    if tasks_path is None:
        tasks_path = find_upstream_input(path, "tasks")
        if tasks_path is None:
            return None, f"{task_id} omitted: pass --tasks TASKS.jsonl (no .meta.json upstream names a tasks file)"
    task = next((t for t in read_records(tasks_path, Task) if t.id == task_id), None)
    if task is None:
        return None, f"{task_id} omitted: it is not in {tasks_path}"
    return task, str(tasks_path)


def _text(text: str, indent: str) -> str:
    """A text whole, indented, so the role labels stay visible at the left."""
    if not text.strip():
        return f"{indent}(empty)"
    return textwrap.indent(text, indent)


def _messages(messages: list[dict], indent: str) -> list[str]:
    lines = []
    for i, message in enumerate(messages):
        if i:
            lines.append("")
        lines += [f"{indent}[{message['role']}]", _text(message["content"], indent + "    ")]
    return lines


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _rule(char: str, indent: str = "") -> str:
    return indent + char * (RULE_WIDTH_CHARS - len(indent))


def _metric_means(metrics: dict) -> str:
    return ", ".join(f"{name} {_num(entry['mean'])}" for name, entry in metrics.items())


def _future_lines(record, k: int, indent: str) -> list[str]:
    lines = []
    for s, future in enumerate(record.futures[k]):
        status = f"terminated: {'yes' if future['terminated'] else 'no'}, error: {future['error'] or 'none'}"
        lines += ["", _rule("-", indent), f"{indent}future [{k}][{s}]   {status}"]
        if isinstance(record, Rewarded):
            values = []
            for name, entry in record.metrics[k].items():
                error = entry["errors"][s] if s < len(entry["errors"]) else None
                value = entry["values"][s] if s < len(entry["values"]) else None
                values.append(f"{name} FAILED ({error})" if error else f"{name} {_num(value)}")
            lines.append(f"{indent}metrics: {', '.join(values)}")
        lines.append(_rule("-", indent))
        lines += _messages(future["messages"], indent) if future["messages"] else [f"{indent}(no messages)"]
    return lines


def _candidate_lines(record) -> list[str]:
    lines = []
    futures = getattr(record, "futures", None)
    for k, response in enumerate(record.responses):
        header = f"CANDIDATE [{k}] of {len(record.responses)}"
        if isinstance(record, Rewarded):
            header += f"   reward {_num(record.rewards[k])}   ({_metric_means(record.metrics[k])})"
        if futures is not None:
            header += f"   {_count(len(futures[k]), 'future')}"
        lines += ["", _rule("="), header, _rule("="), *_messages([{"role": "assistant", "content": response}], "  ")]
        if futures is not None:
            lines += _future_lines(record, k, "      ")
    return lines


def _task_lines(task: Task | None, note: str) -> list[str]:
    if task is None:
        return [f"TASK {note}"]
    lines = [f"TASK {task.id} ({task.task}), hidden from the policy; from {note}", "  goal:", _text(task.goal, "    ")]
    lines += ["  reference:", _text(task.reference, "    ")]
    if task.metadata:
        lines.append(f"  metadata: {json.dumps(task.metadata, ensure_ascii=False)}")
    return lines


def format_record(loaded: dict, task: Task | None = None, task_note: str = "") -> str:
    """A record from `load_record` as readable text: task, prompt, candidates and their futures."""
    kind, record = loaded["kind"], loaded["record"]
    title = f"{kind} record {loaded['index']} of {loaded['total']}   id {record.id}"
    if getattr(record, "task_id", None) is not None:
        title += f"   task {record.task_id}"
    if getattr(record, "turn", None) is not None:
        title += f"   turn {record.turn}"
    lines = [_rule("#"), title, _rule("#"), "", *_task_lines(task, task_note)]
    if kind == "tasks":
        if record.prompt:
            lines += ["", "OPENING PROMPT", *_messages(record.prompt, "  ")]
    elif kind in ("contexts", "generations", "simulations", "rewards"):
        lines += ["", f"PROMPT ({_count(len(record.prompt), 'message')})", *_messages(record.prompt, "  ")]
        if kind != "contexts":
            lines += ["", f"generated with: {json.dumps(record.gen, ensure_ascii=False)}"]
            lines += _candidate_lines(record)
    elif kind == "pairs":
        lines += ["", f"PROMPT ({_count(len(record.prompt), 'message')})", *_messages(record.prompt, "  ")]
        for label, messages, reward in (
            ("CHOSEN", record.chosen, record.chosen_reward),
            ("REJECTED", record.rejected, record.rejected_reward),
        ):
            lines += ["", _rule("="), f"{label}   reward {_num(reward)}", _rule("="), *_messages(messages, "  ")]
        lines += ["", _rule("="), f"margin {_num(record.margin)}"]
    elif kind == "evaluation":
        lines += ["", f"CONVERSATION ({_count(len(record.messages), 'message')})", *_messages(record.messages, "  ")]
        lines += ["", f"terminated: {'yes' if record.terminated else 'no'}, error: {record.error or 'none'}"]
        for name, value in record.metrics.items():
            error = record.metric_errors.get(name)
            lines.append(f"  {name}: {_num(value)}" + (f" (FAILED: {error})" if error else ""))
        for name in sorted(set(record.metric_errors) - set(record.metrics)):
            lines.append(f"  {name}: FAILED ({record.metric_errors[name]})")
    elif kind == "sft":
        lines += ["", f"CONVERSATION ({_count(len(record.messages), 'message')})", *_messages(record.messages, "  ")]
    else:
        raise ValueError(f"no record format for kind {kind!r}")
    return "\n".join(lines)


def show_record(path, index: int | None = None, record_id: str | None = None, tasks_path=None) -> str:
    """Load one record, find its task, and format it."""
    loaded = load_record(path, index, record_id)
    task, note = find_task(path, loaded["record"], tasks_path)
    return format_record(loaded, task, note)
