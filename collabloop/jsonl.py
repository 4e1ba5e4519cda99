"""The one JSONL reader/writer of the project.

Reading validates every line against its record type and fails on the first
bad line with the file and line number. Writing is atomic: a stage appends
finished records to `<output>.partial` (flushed and fsynced per batch) and,
once every record is there, writes the output under a temporary name and
renames it. A restarted stage reads the partial file back and skips the ids it
already holds.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from collabloop.failpoints import failpoint
from collabloop.records import MAX_TASK_LINE_BYTES, Record, RecordError, Task

logger = logging.getLogger(__name__)

R = TypeVar("R", bound=Record)


def dumps(obj: dict) -> str:
    """One canonical JSON line (no trailing newline)."""
    return json.dumps(obj, ensure_ascii=False, allow_nan=False)


class _NotJSONNumber(ValueError):
    """NaN, Infinity or -Infinity: Python's reader takes them, JSON (RFC 8259) does not, and neither do we."""


def _refuse_constant(name: str):
    raise _NotJSONNumber(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: valid JSON text, but no float holds it
        raise _NotJSONNumber(text if len(text) < 40 else text[:37] + "...")
    return value


class _DuplicateKey(ValueError):
    """An object naming a key twice: Python keeps the last silently, so the first could hide a value."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _parse_line(line: str, where: str) -> Any:
    """One JSON value, strictly: RFC 8259 numbers that a float holds, each key once, text that is UTF-8."""
    try:
        obj = json.loads(line, parse_constant=_refuse_constant, parse_float=_finite_float,
                         object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as e:
        raise RecordError(where, "<line>", f"not valid JSON ({e.msg} at column {e.colno})") from None
    except _NotJSONNumber as e:
        raise RecordError(where, "<line>", f"not valid JSON ({e} is not a JSON number a float holds; "
                                           f"write a finite number)") from None
    except _DuplicateKey as e:
        raise RecordError(where, str(e), "named twice in one object") from None
    except RecursionError:
        raise RecordError(where, "<line>", "nested too deeply to read") from None
    except ValueError as e:  # an integer of thousands of digits (Python refuses to convert it)
        raise RecordError(where, "<line>", f"not readable: {str(e)[:120]}") from None
    if "\\ud" in line.lower():  # an escaped UTF-16 surrogate: paired (an emoji) is fine, alone it is no text
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise RecordError(where, "<line>", "holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not "
                                               "text; write the character itself or a surrogate pair") from None
    return obj


# The longest line a record file may hold: a simulation record with every candidate's futures is well
# under a megabyte. A longer line is a damaged or hostile file, refused before it is held in memory whole.
MAX_LINE_BYTES = 64 * 2**20


def iter_json_lines(path: str | Path, max_line_bytes: int = MAX_LINE_BYTES,
                    limit_hint: str = "") -> Iterator[tuple[int, dict]]:
    """Yield (line number, parsed object) for each non-empty line of `path`; a line longer than
    `max_line_bytes` is an error (`limit_hint` says how to raise the limit)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    with path.open("rb") as f:
        line_no = 0
        while raw := f.readline(max_line_bytes + 1):
            line_no += 1
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                raise RecordError(f"{path}:{line_no}", "<line>", f"longer than {max_line_bytes} bytes{limit_hint}")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise RecordError(f"{path}:{line_no}", "<line>", f"not UTF-8 (byte {e.start + 1})") from None
            if not line.strip():
                continue
            yield line_no, _parse_line(line, f"{path}:{line_no}")


def read_records(path: str | Path, record_type: type[R], max_line_bytes: int = MAX_LINE_BYTES,
                 limit_hint: str = "") -> list[R]:
    """Read and validate every record of a JSONL file; ids must be unique."""
    records, seen = [], {}
    for line_no, obj in iter_json_lines(path, max_line_bytes, limit_hint):
        record = record_type.from_dict(obj, f"{path}:{line_no}")
        if record.id in seen:
            raise RecordError(
                f"{path}:{line_no}", "id", f"duplicate id {record.id!r} (first on line {seen[record.id]})"
            )
        seen[record.id] = line_no
        records.append(record)
    return records


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# The mode a new file gets here (0666 less the user's umask). mkstemp makes its file 0600: an output
# renamed from it would be private where every other file the user writes is not.
FILE_MODE = 0o666 & ~_umask()


@contextmanager
def atomic_file(path: str | Path, binary: bool = False) -> Iterator:
    """A file that appears at `path` only when whole: a temporary file in the same folder, made exclusively
    (`mkstemp`: a name nobody else holds, never a link someone placed), fsync, rename.

    If the body raises, the old content of `path` (if any) is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if path.suffix == ".jsonl":  # a stage's output (its meta and config are .json and .yaml)
            failpoint("output_written")
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.filename is None:  # a failed flush names no file: name the one being written
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_tasks(path: str | Path) -> list:
    """The tasks of a task file, which must hold at least one: an empty file is a mistake, never a run
    with nothing to do (that would replace finished outputs with empty ones)."""
    tasks = read_records(path, Task, MAX_TASK_LINE_BYTES, " (COLLABLOOP_MAX_TASK_LINE_BYTES raises the limit)")
    if not tasks:
        raise RecordError(f"{path}", "<file>", "holds no tasks; a task file needs at least one task, a line each")
    return tasks


def read_records_with_tasks(path: str | Path, record_type: type[R], tasks_path: str | Path):
    """Stage records and the tasks they name (by `task_id`); every task must be there."""
    records = read_records(path, record_type)
    tasks = {t.id: t for t in read_tasks(tasks_path)}
    for record in records:
        if record.task_id not in tasks:
            line_no = next(n for n, obj in iter_json_lines(path) if obj.get("id") == record.id)
            raise RecordError(
                f"{path}:{line_no}", "task_id",
                f"record {record.id!r} names task {record.task_id!r}, not in {tasks_path}",
            )
    return records, tasks


def write_records(path: str | Path, records: Iterable[Record | dict]) -> int:
    """Write records atomically; returns how many were written."""
    count = 0
    with atomic_file(path) as f:
        for record in records:
            f.write(dumps(record.to_dict() if isinstance(record, Record) else record) + "\n")
            count += 1
    return count


def write_json(path: str | Path, obj: dict) -> None:
    """Write one JSON document atomically."""
    with atomic_file(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, allow_nan=False)
        f.write("\n")


class PartialOutput:
    """Append-only file of finished records, the resumable half of a stage's output.

    A kill can leave the last line half-written (no trailing newline): that
    line is the only one that can be torn, so it is cut off and its record is
    redone. Any other bad line means the file was damaged some other way, and
    the stage refuses to go on rather than guess.
    """

    def __init__(self, output_path: str | Path, record_type: type[Record]):
        self.output_path = Path(output_path)
        self.path = self.output_path.with_name(self.output_path.name + ".partial")
        self.record_type = record_type
        self.records: dict[str, Record] = {}
        self.repaired_bytes = 0
        self._file = None

    def load(self) -> dict[str, Record]:
        """Read back what an earlier run finished; repair a torn last line."""
        if not self.path.exists():
            return self.records
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            self.repaired_bytes = len(data) - keep
            logger.warning(
                "%s: dropping a torn last line (%d bytes) left by an interrupted run; its record is redone",
                self.path, self.repaired_bytes,
            )
            with self.path.open("r+b") as f:
                f.truncate(keep)
                f.flush()
                os.fsync(f.fileno())
        try:
            for record in read_records(self.path, self.record_type):
                self.records[record.id] = record
        except RecordError as e:
            raise RecordError(
                e.where, e.field_name,
                f"{e.problem}. The partial file of an interrupted run is damaged; "
                f"delete {self.path} to redo this stage",
            ) from None
        return self.records

    def append(self, records: Iterable[Record]) -> None:
        """Append finished records and make them durable before returning.

        The batch goes to the file unbuffered; if a write fails (a full disk), the file is cut back to
        its last whole line, so it never holds a torn line in the middle.
        """
        records = list(records)
        for record in records:
            if record.id in self.records:
                raise ValueError(
                    f"record {record.id!r} is already in {self.path}; a stage must not redo finished records"
                )
        if not records:
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("ab", buffering=0)
        data = "".join(dumps(r.to_dict()) + "\n" for r in records).encode("utf-8")
        size_before = self._file.seek(0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[self._file.write(view):]
            os.fsync(self._file.fileno())
        except OSError as e:
            os.ftruncate(self._file.fileno(), size_before)
            self.close()
            raise OSError(e.errno, e.strerror, str(self.path)) from None
        for record in records:
            self.records[record.id] = record
        failpoint("append")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def write_output(self, order: list[str]) -> int:
        """Write the output in `order` (the input order) atomically; the partial file stays until `discard`.

        The caller writes the stage's meta in between, so a kill at any point leaves either the partial
        file to resume from or a complete output with its meta.
        """
        self.close()
        missing = [i for i in order if i not in self.records]
        if missing:
            raise RuntimeError(f"{self.path}: {len(missing)} records are missing (e.g. {missing[:3]}); cannot finalize")
        return write_records(self.output_path, (self.records[i] for i in order))

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
        self.records.clear()
