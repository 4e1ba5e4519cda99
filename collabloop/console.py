"""What a person sees while a stage runs: its own lines on the console, everything else in a log.

vLLM, DeepSpeed, torch.distributed and transformers write hundreds of lines
per stage, to Python's streams and from C++ straight to the file descriptors.
With `COLLABLOOP_QUIET=1` (run_loop.sh sets it) a stage sends file descriptors
1 and 2 to a log beside its output and keeps copies of the console for its
start line, its progress bars, its end line and its errors. Without it
nothing moves: a stage run by hand shows everything, as before.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

QUIET_ENV = "COLLABLOOP_QUIET"

# The console's streams once `quiet` ran; until then the process's own (looked up at each use).
_out = None
_err = None
_log_path: str | None = None


def log_path_for(output: str | Path) -> Path:
    """The log beside an output: generations.jsonl -> generations.log; a model folder m -> m.log."""
    output = Path(output)
    return output.with_suffix(".log") if output.suffix == ".jsonl" else output.with_name(output.name + ".log")


def quiet(output: str | Path) -> None:
    """With COLLABLOOP_QUIET=1: third-party output of this process goes to the log beside `output`."""
    global _out, _err, _log_path
    if os.environ.get(QUIET_ENV) != "1" or _log_path is not None:
        return
    path = log_path_for(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    _out = os.fdopen(os.dup(1), "w", buffering=1)
    _err = os.fdopen(os.dup(2), "w", buffering=1)
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    _log_path = str(path)


def _is_main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"


def announce(stage: str) -> None:
    """The stage's start line, once it has work to do (a quiet console only: otherwise its log shows it)."""
    if _log_path is not None and _is_main_rank():
        say(f"[{stage}] started (log: {_log_path})")


def say(line: str) -> None:
    """One line for the person at the console."""
    print(line, file=_out or sys.stdout, flush=True)


def error(line: str) -> None:
    """An error for the console, with the log's path when the details went there."""
    where = f" (log: {_log_path})" if _log_path else ""
    print(f"{line}{where}", file=_err or sys.stderr, flush=True)


def progress_stream():
    """Where progress bars go: the console."""
    return _err or sys.stderr


def is_quiet() -> bool:
    return _log_path is not None
