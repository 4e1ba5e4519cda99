"""Look inside a run: summarize any stage file, or read one record as a conversation.

Usage:
    python -m collabloop.inspect_run data/runs/demo                          # each iteration, briefly
    python -m collabloop.inspect_run data/runs/demo/iter_1/rewards.jsonl     # one file's statistics
    python -m collabloop.inspect_run data/runs/demo/iter_1/model             # a trained model's metrics
    python -m collabloop.inspect_run data/runs/demo/iter_1/rewards.jsonl --record 0
    python -m collabloop.inspect_run data/runs/demo/iter_1/pairs.jsonl --id math-demo-016/turn0
    python -m collabloop.inspect_run contexts.jsonl --record 3 --tasks data/tasks/math_demo_train.jsonl

The kind of a .jsonl file comes from the `stage` in the `.meta.json` beside it,
else from its name (`rewards.jsonl`), else from the first record kind its first
line parses as. Every line is validated: a bad one is reported with file, line
and field, and the command exits with status 2 (1 for other errors: a missing
file, a record index that does not exist).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import sys
import textwrap
from collections import Counter
from pathlib import Path

from collabloop.jsonl import iter_json_lines, read_records
from collabloop.records import RECORD_TYPES, Record, RecordError, Rewarded, Task
from collabloop.stage import meta_path_for, partial_meta_path_for
from collabloop.stats import bootstrap_ci, describe

logger = logging.getLogger(__name__)

# The `stage` written by each stage's StageRun, and the record kind of its output.
KIND_BY_STAGE = {
    "contexts": "contexts",
    "generate": "generations",
    "simulate": "simulations",
    "annotate": "rewards",
    "pairs": "pairs",
    "evaluate": "evaluation",
}
# Most specific first: a record of a richer kind carries fields the poorer kinds reject as unknown.
KIND_TRIAL_ORDER = ("evaluation", "rewards", "simulations", "generations", "contexts", "pairs", "sft", "tasks")
# Files of one iteration in pipeline order; other .jsonl files (evaluation outputs) follow by name.
PIPELINE_FILES = ("contexts.jsonl", "generations.jsonl", "simulations.jsonl", "rewards.jsonl", "pairs.jsonl")
RULE_WIDTH_CHARS = 78


class InspectError(ValueError):
    """A request that cannot be answered (no such record, a folder that is not a run)."""


# ---------------------------------------------------------------------------
# Kind detection and meta files
# ---------------------------------------------------------------------------


def read_meta(path: str | Path, partial: bool = False) -> dict | None:
    """The `.meta.json` beside a stage output (with `partial`, its partial file's), or None when there is none."""
    meta_path = partial_meta_path_for(path) if partial else meta_path_for(path)
    if not meta_path.exists():
        return None
    try:
        return json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        # The meta only describes the output; the records themselves are still read and validated.
        logger.warning("%s: not valid JSON (%s); ignoring it", meta_path, e)
        return None


def detect_kind(path: str | Path, meta: dict | None = None) -> tuple[str, str]:
    """(kind, how it was found) for a .jsonl file; raises RecordError when line 1 fits no kind."""
    path = Path(path)
    stage = (meta or {}).get("stage")
    kind = KIND_BY_STAGE.get(stage) or (stage if stage in RECORD_TYPES else None)
    if kind:
        return kind, f"stage '{stage}' in {meta_path_for(path).name}"
    if path.stem in RECORD_TYPES:
        return path.stem, f"file name {path.name}"
    first = next(iter_json_lines(path), None)
    if first is None:
        raise InspectError(f"{path}: empty, with no .meta.json or kind-named file name to tell what it holds")
    line_no, obj = first
    where = f"{path}:{line_no}"
    problems = []
    for kind in KIND_TRIAL_ORDER:
        try:
            RECORD_TYPES[kind].from_dict(obj, where)
        except RecordError as e:
            problems.append(f"  as {kind}: field '{e.field_name}': {e.problem}")
            continue
        return kind, f"line {line_no} parses as {kind}"
    raise RecordError(where, "<record>", "fits none of the record kinds:\n" + "\n".join(problems))


def _resolve_input(meta_file: Path, value: str) -> Path | None:
    """A path named in a meta file; stages record them relative to where the run was launched."""
    candidate = Path(value)
    if candidate.exists():
        return candidate
    if candidate.is_absolute():
        return None
    for ancestor in meta_file.resolve().parents:
        if (ancestor / candidate).exists():
            return ancestor / candidate
    return None


def find_upstream_input(path: str | Path, key: str) -> Path | None:
    """The input `key` of this file's stage, or of the stages upstream of it (followed through their metas)."""
    todo, seen = [Path(path)], set()
    while todo:
        current = todo.pop(0)
        if current.resolve() in seen:
            continue
        seen.add(current.resolve())
        meta = read_meta(current)
        if meta is None:
            continue
        inputs = meta.get("inputs") or {}
        if key in inputs:
            resolved = _resolve_input(meta_path_for(current), inputs[key])
            if resolved is None:
                logger.warning("%s names %s %s, which is not there", meta_path_for(current), key, inputs[key])
            return resolved
        for value in inputs.values():
            resolved = _resolve_input(meta_path_for(current), value)
            if resolved is not None and resolved.suffix == ".jsonl":
                todo.append(resolved)
    return None


# ---------------------------------------------------------------------------
# Statistics per kind (plain dicts of numbers, ready for json.dumps)
# ---------------------------------------------------------------------------


def error_reason(message: str) -> str:
    """The kind of a failure: the text before the first ': ' (what follows varies per call)."""
    return message.split(": ", 1)[0]


def _distribution(values) -> dict:
    return dict(sorted(Counter(values).items()))


def _context_stats(records) -> dict:
    return {
        "turns": _distribution(r.turn for r in records),
        "distinct_tasks": len({r.task_id for r in records}),
        "prompt_messages": describe([len(r.prompt) for r in records]),
    }


def _generation_stats(records) -> dict:
    lengths_chars = [len(text) for r in records for text in r.responses]
    return {
        "candidates_per_record": _distribution(len(r.responses) for r in records),
        "response_length_chars": describe(lengths_chars),
        "empty_responses": sum(1 for r in records for text in r.responses if not text.strip()),
    }


def _simulation_stats(records) -> dict:
    futures = [f for r in records for per in r.futures for f in per]
    errors = [f["error"] for f in futures if f["error"] is not None]
    return {
        "futures": len(futures),
        "futures_per_candidate": _distribution(len(per) for r in records for per in r.futures),
        "terminated": sum(1 for f in futures if f["terminated"]),
        "failed": len(errors),
        "errors_by_reason": dict(Counter(map(error_reason, errors)).most_common()),
    }


def _reward_stats(records) -> dict:
    rewards = [reward for r in records for reward in r.rewards]
    by_metric: dict[str, dict] = {}
    for r in records:
        for per_candidate in r.metrics:
            for name, entry in per_candidate.items():
                acc = by_metric.setdefault(name, {"candidate_means": [], "values": 0, "errors": []})
                acc["candidate_means"].append(entry["mean"])
                acc["values"] += len(entry["values"])
                acc["errors"] += [e for e in entry["errors"] if e is not None]
    metrics = {
        name: {
            # Stats over the per-candidate means, the numbers the reward is built from.
            "candidate_means": describe(acc["candidate_means"]),
            "values": acc["values"],
            "values_failed": len(acc["errors"]),
            "errors_by_reason": dict(Counter(map(error_reason, acc["errors"])).most_common()),
        }
        for name, acc in sorted(by_metric.items())
    }
    return {
        "rewards": describe(rewards),
        "candidates_without_reward": [f"{r.id}[{k}]" for r in records for k, v in enumerate(r.rewards) if v is None],
        "metrics": metrics,
    }


def _pair_stats(records) -> dict:
    return {
        "margin": describe([p.margin for p in records]),
        "chosen_reward": describe([p.chosen_reward for p in records]),
        "rejected_reward": describe([p.rejected_reward for p in records]),
    }


def _evaluation_stats(records) -> dict:
    names = sorted({name for r in records for name in (*r.metrics, *r.metric_errors)})
    metrics = {}
    for name in names:
        values = [r.metrics.get(name) for r in records]
        errors = [r.metric_errors[name] for r in records if name in r.metric_errors]
        metrics[name] = {
            **bootstrap_ci([v for v in values if v is not None]),
            "missing": sum(1 for v in values if v is None),
            "errors_by_reason": dict(Counter(map(error_reason, errors)).most_common()),
        }
    errors = [r.error for r in records if r.error is not None]
    return {
        "assistant_turns": describe([sum(m["role"] == "assistant" for m in r.messages) for r in records]),
        "terminated": sum(1 for r in records if r.terminated),
        "failed": len(errors),
        "errors_by_reason": dict(Counter(map(error_reason, errors)).most_common()),
        "metrics": metrics,
    }


def _task_stats(records) -> dict:
    return {
        "by_task_kind": dict(Counter(t.task for t in records).most_common()),
        "with_opening_prompt": sum(1 for t in records if t.prompt is not None),
    }


def _sft_stats(records) -> dict:
    return {
        "assistant_turns": _distribution(sum(m["role"] == "assistant" for m in r.messages) for r in records),
        "messages": describe([len(r.messages) for r in records]),
    }


# A kind's records carry every field of the kinds it extends, so its statistics include theirs.
STATS_BY_KIND = {
    "contexts": (_context_stats,),
    "generations": (_context_stats, _generation_stats),
    "simulations": (_context_stats, _generation_stats, _simulation_stats),
    "rewards": (_context_stats, _generation_stats, _simulation_stats, _reward_stats),
    "pairs": (_pair_stats,),
    "evaluation": (_evaluation_stats,),
    "tasks": (_task_stats,),
    "sft": (_sft_stats,),
}


# ---------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------


def summarize_file(path: str | Path) -> dict:
    """Kind, record count, fields, meta status/counts and per-kind statistics of one .jsonl file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    meta = read_meta(path)
    kind, kind_source = detect_kind(path, meta)
    record_type = RECORD_TYPES[kind]
    records = read_records(path, record_type)
    stats: dict = {}
    for stats_fn in STATS_BY_KIND[kind]:
        stats.update(stats_fn(records))
    logger.debug("%s: %d %s records", path, len(records), kind)
    return {
        "type": "file",
        "path": str(path),
        "kind": kind,
        "kind_source": kind_source,
        "num_records": len(records),
        "fields": [f.name for f in dataclasses.fields(record_type)],
        "meta": None if meta is None else {k: meta.get(k) for k in ("stage", "status", "counts", "seconds")},
        "stats": stats,
    }


def summarize_model(path: str | Path) -> dict:
    """The scalar training metrics of a trained model folder and its stage meta."""
    path = Path(path)
    try:
        train_metrics = json.loads((path / "train_metrics.json").read_text())
    except json.JSONDecodeError as e:
        raise InspectError(f"{path / 'train_metrics.json'}: not valid JSON ({e})") from None
    meta = read_meta(path)
    return {
        "type": "model",
        "path": str(path),
        "kind": "model",
        "meta": None if meta is None else {k: meta.get(k) for k in ("stage", "status", "counts", "seconds")},
        "train_metrics": {k: v for k, v in train_metrics.items() if not isinstance(v, (list, dict))},
        "log_entries": len(train_metrics.get("log_history", [])),
        "files": sorted(p.name for p in path.iterdir()),
    }


def _iteration_number(folder: Path) -> tuple[int, str]:
    match = re.fullmatch(r"iter_(\d+)", folder.name)
    return (int(match.group(1)) if match else sys.maxsize, folder.name)


def summarize_folder(folder: Path, name: str, *, subfolders: bool = True) -> dict:
    """Every stage output in a folder (and, with `subfolders`, one level down: eval/, model/)."""
    patterns = ("*.jsonl", "*/*.jsonl") if subfolders else ("*.jsonl",)
    found = {p for pattern in patterns for p in folder.glob(pattern)}
    in_pipeline = [folder / n for n in PIPELINE_FILES if folder / n in found]
    jsonl_files = in_pipeline + sorted(found - set(in_pipeline))
    entries = [{"label": str(p.relative_to(folder)), "summary": summarize_file(p)} for p in jsonl_files]
    if subfolders:
        for model_dir in sorted(p.parent for p in folder.glob("*/train_metrics.json")):
            entries.append({"label": model_dir.name + "/", "summary": summarize_model(model_dir)})
    # A stage that was killed or is still working has a meta but no output yet.
    unfinished = []
    meta_files = sorted(folder.glob("*.meta.json")) + (sorted(folder.glob("*/*.meta.json")) if subfolders else [])
    for meta_file in meta_files:
        output = meta_file.with_name(meta_file.name[: -len(".meta.json")].removesuffix(".partial"))
        jsonl = output.with_name(output.name + ".jsonl")
        meta = read_meta(jsonl, partial=meta_file.name.endswith(".partial.meta.json"))
        label = str(jsonl.relative_to(folder))
        if meta is not None and not jsonl.exists() and not output.is_dir() and \
                label not in {u["output"] for u in unfinished}:
            unfinished.append({"output": label, "stage": meta.get("stage"), "status": meta.get("status")})
    return {"name": name, "path": str(folder), "entries": entries, "unfinished": unfinished}


def summarize(path: str | Path) -> dict:
    """Summary of a stage .jsonl file, a trained model folder, an iteration folder or a run folder."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_file() and path.name == "train_metrics.json":
        path = path.parent
    if path.is_file():
        return summarize_file(path)
    if (path / "train_metrics.json").exists():
        return summarize_model(path)
    iteration_dirs = sorted((p for p in path.glob("iter_*") if p.is_dir()), key=_iteration_number)
    if iteration_dirs:
        # Files shared by the iterations (evaluation contexts) sit beside the iter_* folders.
        groups = [summarize_folder(path, "(top level)", subfolders=False)] if any(path.glob("*.jsonl")) else []
        groups += [summarize_folder(p, p.name) for p in iteration_dirs]
    elif any(path.glob("*.jsonl")):
        groups = [summarize_folder(path, path.name)]
    else:
        raise InspectError(f"{path}: not a run (no iter_* folders), an iteration (no .jsonl files) or a model folder")
    return {"type": "run", "path": str(path), "kind": "run", "groups": groups}


# ---------------------------------------------------------------------------
# Formatting summaries
# ---------------------------------------------------------------------------


def _num(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _stats_line(d: dict) -> str:
    """A `describe` dict as one line."""
    if "mean" not in d:
        return f"no values ({d['count']} missing)" if d["count"] else "no values"
    text = f"mean {_num(d['mean'])}, std {_num(d['std'])}, min {_num(d['min'])}, max {_num(d['max'])} (n={d['count']}"
    return text + (f", {d['missing']} missing)" if d["missing"] else ")")


def _dist_line(dist: dict) -> str:
    return ", ".join(f"{key}: {count}" for key, count in dist.items()) or "none"


def _reason_lines(errors_by_reason: dict, indent: str) -> list[str]:
    return [f"{indent}{count:>5} x {reason}" for reason, count in errors_by_reason.items()]


def _format_stats(kind: str, s: dict) -> list[str]:
    lines = []
    if "turns" in s:
        lines.append(f"turns: {_dist_line(s['turns'])} ({s['distinct_tasks']} distinct tasks)")
        lines.append(f"prompt messages: {_stats_line(s['prompt_messages'])}")
    if "candidates_per_record" in s:
        lines.append(f"candidates per record (K): {_dist_line(s['candidates_per_record'])}")
        lines.append(f"response length (chars): {_stats_line(s['response_length_chars'])}")
        lines.append(f"empty responses: {s['empty_responses']}")
    if "futures_per_candidate" in s:
        lines.append(
            f"futures: {s['futures']} (per candidate S: {_dist_line(s['futures_per_candidate'])}), "
            f"terminated {s['terminated']}, failed {s['failed']}"
        )
        lines += _reason_lines(s["errors_by_reason"], "  ")
    if kind == "rewards":
        lines.append(f"reward (MR) per candidate: {_stats_line(s['rewards'])}")
        without = s["candidates_without_reward"]
        shown = ", ".join(without[:5]) + (", ..." if len(without) > 5 else "")
        lines.append(f"candidates without reward: {len(without)}" + (f" ({shown})" if without else ""))
        lines.append("metrics (stats over candidate means; failed counts per-future values):")
        for name, m in s["metrics"].items():
            lines.append(f"  {name}: {_stats_line(m['candidate_means'])}; failed {m['values_failed']} of {m['values']}")
            lines += _reason_lines(m["errors_by_reason"], "    ")
    if kind == "pairs":
        lines.append(f"margin: {_stats_line(s['margin'])}")
        lines.append(f"chosen reward: {_stats_line(s['chosen_reward'])}")
        lines.append(f"rejected reward: {_stats_line(s['rejected_reward'])}")
    if kind == "evaluation":
        lines.append(f"assistant turns: {_stats_line(s['assistant_turns'])}")
        lines.append(f"terminated: {s['terminated']}, failed: {s['failed']}")
        lines += _reason_lines(s["errors_by_reason"], "  ")
        lines.append("metrics (mean, 95% bootstrap interval):")
        for name, m in s["metrics"].items():
            lines.append(
                f"  {name}: {_num(m['mean'])} [{_num(m['ci_low'])}, {_num(m['ci_high'])}] "
                f"(n={m['n']}, {m['missing']} missing)"
            )
            lines += _reason_lines(m["errors_by_reason"], "    ")
    if kind == "tasks":
        lines.append(f"by task kind: {_dist_line(s['by_task_kind'])}")
        lines.append(f"with opening prompt: {s['with_opening_prompt']}")
    if kind == "sft":
        lines.append(f"assistant turns: {_dist_line(s['assistant_turns'])}")
        lines.append(f"messages: {_stats_line(s['messages'])}")
    return lines


def _meta_lines(meta: dict | None) -> list[str]:
    if meta is None:
        return ["meta: none (no .meta.json beside it)"]
    counts = ", ".join(f"{k}={v}" for k, v in (meta.get("counts") or {}).items())
    head = f"meta: stage {meta.get('stage')}, status {meta.get('status')}, {meta.get('seconds')}s"
    return [head, f"  counts: {counts}"]


def _format_file(summary: dict) -> str:
    lines = [
        summary["path"],
        f"kind: {summary['kind']} (found by: {summary['kind_source']})",
        f"records: {summary['num_records']}",
        f"fields: {', '.join(summary['fields'])}",
        *_meta_lines(summary["meta"]),
        *_format_stats(summary["kind"], summary["stats"]),
    ]
    return "\n".join(lines[:1] + ["  " + line for line in lines[1:]])


def _format_model(summary: dict) -> str:
    lines = [summary["path"], "kind: trained model", *_meta_lines(summary["meta"])]
    lines.append(f"training log entries: {summary['log_entries']}")
    lines += [f"{name}: {_num(value)}" for name, value in summary["train_metrics"].items()]
    lines.append(f"files: {', '.join(summary['files'])}")
    return "\n".join(lines[:1] + ["  " + line for line in lines[1:]])


def brief(summary: dict, label: str | None = None) -> str:
    """One line about one file or model of an iteration, named `label` (default: its file name)."""
    name = label or Path(summary["path"]).name
    if summary["type"] == "model":
        metrics = summary["train_metrics"]
        status = (summary["meta"] or {}).get("status", "no meta")
        return (
            f"{name:<24} {status:<9} {metrics.get('steps', '?')} steps, "
            f"loss {_num(metrics.get('first_loss'))} -> {_num(metrics.get('last_loss'))}"
        )
    s, kind = summary["stats"], summary["kind"]
    status = (summary["meta"] or {}).get("status", "no meta")
    head = f"{name:<24} {status:<9} {summary['num_records']} {kind}"
    if kind == "rewards":
        failed = sum(m["values_failed"] for m in s["metrics"].values())
        detail = (
            f"reward mean {_num(s['rewards'].get('mean'))} over {s['rewards']['count']} candidates, "
            f"{len(s['candidates_without_reward'])} without reward, {failed} metric values failed"
        )
    elif kind == "simulations":
        detail = f"{s['futures']} futures, {s['terminated']} terminated, {s['failed']} failed"
    elif kind == "generations":
        mean_chars = _num(s["response_length_chars"].get("mean"))
        detail = f"K {_dist_line(s['candidates_per_record'])}, mean response {mean_chars} chars"
    elif kind == "contexts":
        detail = f"turns {_dist_line(s['turns'])}"
    elif kind == "pairs":
        detail = f"margin mean {_num(s['margin'].get('mean'))}"
    elif kind == "evaluation":
        detail = ", ".join(f"{n} {_num(m['mean'])}" for n, m in s["metrics"].items())
    elif kind == "tasks":
        detail = _dist_line(s["by_task_kind"])
    elif kind == "sft":
        detail = f"assistant turns {_dist_line(s['assistant_turns'])}"
    else:
        raise ValueError(f"no brief line for kind {kind!r}")
    return f"{head}: {detail}"


def _format_run(summary: dict) -> str:
    lines = [summary["path"]]
    for group in summary["groups"]:
        lines.append(f"  {group['name']}")
        lines += [f"    {brief(entry['summary'], entry['label'])}" for entry in group["entries"]]
        for u in group["unfinished"]:
            lines.append(f"    {u['output']:<24} {u['status']:<9} stage {u['stage']} has no output yet")
    return "\n".join(lines)


def format_summary(summary: dict) -> str:
    """The text of a summary from `summarize`."""
    if summary["type"] == "file":
        return _format_file(summary)
    if summary["type"] == "model":
        return _format_model(summary)
    if summary["type"] == "run":
        return _format_run(summary)
    raise ValueError(f"unknown summary type {summary['type']!r}")


# ---------------------------------------------------------------------------
# One record as a conversation
# ---------------------------------------------------------------------------


def load_record(path: str | Path, index: int | None = None, record_id: str | None = None) -> dict:
    """One record of a file by 0-based index or id: {"kind", "record", "index", "total"}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (--record/--id need a .jsonl file)")
    kind, _ = detect_kind(path, read_meta(path))
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


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m collabloop.inspect_run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("path", help="a stage .jsonl file, a trained model folder, an iteration folder or a run folder")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--record", type=int, metavar="N", help="show record N (0-based) as a conversation")
    which.add_argument("--id", metavar="ID", help="show the record with this id as a conversation")
    parser.add_argument("--tasks", metavar="TASKS.jsonl", help="tasks file for the goal (default: named in .meta.json)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_level = os.environ.get("COLLABLOOP_LOG_LEVEL", "WARNING")
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.record is None and args.id is None:
            text = format_summary(summarize(args.path))
        else:
            text = show_record(args.path, args.record, args.id, args.tasks)
        print(text)
    except RecordError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (InspectError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # Long conversations get piped into `head`; a closed pipe is not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
