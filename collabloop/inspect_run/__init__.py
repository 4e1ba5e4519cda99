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
import logging
import os
import sys

from collabloop.inspect_run.conversation import find_task, format_record, load_record, show_record
from collabloop.inspect_run.formatting import brief, format_summary
from collabloop.inspect_run.kind_stats import error_reason
from collabloop.inspect_run.kinds import InspectError, detect_kind, find_upstream_input
from collabloop.inspect_run.summaries import summarize, summarize_file, summarize_folder, summarize_model
from collabloop.records import RecordError

# The package: kinds (what a file holds), kind_stats and summaries (its numbers), formatting (their text),
# conversation (one record to read). This module is the command line; the docstring above is its --help.
__all__ = [
    "InspectError", "brief", "detect_kind", "error_reason", "find_task", "find_upstream_input", "format_record",
    "format_summary", "load_record", "main", "show_record", "summarize", "summarize_file", "summarize_folder",
    "summarize_model",
]


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
