"""What a stage file holds and where it came from: its record kind, and the inputs its meta files name."""

from __future__ import annotations

import logging
from pathlib import Path

from collabloop.jsonl import iter_json_lines
from collabloop.pipeline import record_stages
from collabloop.records import RECORD_TYPES, RecordError
from collabloop.stage import meta_path_for, read_meta

logger = logging.getLogger(__name__)

# The `stage` written by each stage's StageRun, and the record kind of its output.
def kind_by_stage() -> dict[str, str]:
    return {name: stage.kind for name, stage in record_stages().items()}
# Most specific first: a record of a richer kind carries fields the poorer kinds reject as unknown.
KIND_TRIAL_ORDER = ("evaluation", "rewards", "simulations", "generations", "contexts", "pairs", "sft", "tasks")


class InspectError(ValueError):
    """A request that cannot be answered (no such record, a folder that is not a run)."""


def detect_kind(path: str | Path, meta: dict | None = None) -> tuple[str, str]:
    """(kind, how it was found) for a .jsonl file; raises RecordError when line 1 fits no kind."""
    path = Path(path)
    stage = (meta or {}).get("stage")
    kind = kind_by_stage().get(stage) or (stage if stage in RECORD_TYPES else None)
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
        meta = read_meta(meta_path_for(current))
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
