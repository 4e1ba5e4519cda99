"""Summaries of a stage file, a trained model folder, an iteration folder or a run folder (dicts, no text)."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
from pathlib import Path

from collabloop.inspect_run.kind_stats import STATS_BY_KIND
from collabloop.inspect_run.kinds import InspectError, detect_kind
from collabloop.jsonl import read_records
from collabloop.pipeline import iteration_files
from collabloop.records import RECORD_TYPES
from collabloop.stage import meta_path_for, read_meta

logger = logging.getLogger(__name__)


def summarize_file(path: str | Path) -> dict:
    """Kind, record count, fields, meta status/counts and per-kind statistics of one .jsonl file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    meta = read_meta(meta_path_for(path))
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
    meta = read_meta(meta_path_for(path))
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
    # Files of one iteration in pipeline order; other .jsonl files (evaluation outputs) follow by name.
    in_pipeline = [folder / f"{n}.jsonl" for n in iteration_files() if folder / f"{n}.jsonl" in found]
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
        meta = read_meta(meta_file)
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
