"""Small helpers shared by the entry scripts."""

from __future__ import annotations

import errno
import logging
import os
import sqlite3

from collabloop.llm_client import BudgetExceeded
from collabloop.stage import StageError


def setup_logging(output: str | None = None) -> None:
    """Logging for an entry script; with `output` and COLLABLOOP_QUIET=1, third-party output goes to its log."""
    from collabloop.stage import StageRun

    if output is not None and not StageRun.check_only:  # a check does no work and writes nothing
        from collabloop import console

        console.quiet(output)
    logging.basicConfig(
        level=os.environ.get("COLLABLOOP_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("LiteLLM", "litellm", "httpx", "vllm"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# The exit status of `--check_up_to_date` when the stage has work to do (0: up to date; 1: an error).
EXIT_NOT_UP_TO_DATE = 3


def run_main(main, is_stage: bool = True) -> None:
    """Run an entry script's main; user-facing errors become one line on stderr, exit 1.

    For a stage (`is_stage`), `--check_up_to_date` among the arguments makes it only say
    whether its output is up to date (exit 0) or not (exit 3), and do no work.
    """
    import sys

    from collabloop import console
    from collabloop.config import ConfigError
    from collabloop.records import RecordError
    from collabloop.run_lock import RunBusy
    from collabloop.stage import StageRun, UpToDateAnswer

    if is_stage and "--check_up_to_date" in sys.argv[1:]:
        sys.argv.remove("--check_up_to_date")
        StageRun.check_only = True
    try:
        main()
        if StageRun.check_only:  # every stage asks before any work: this one has a bug
            raise RuntimeError("--check_up_to_date: the stage finished without asking whether it was up to date")
    except UpToDateAnswer as answer:
        console.say(str(answer))
        raise SystemExit(0 if answer.up_to_date else EXIT_NOT_UP_TO_DATE) from None
    except (ConfigError, RecordError, StageError, BudgetExceeded, FileNotFoundError, RunBusy) as e:
        console.error(f"error: {e}")
        raise SystemExit(1) from None
    except (OSError, sqlite3.OperationalError) as e:
        if not disk_full(e):
            _name_a_crash(e)
            raise
        where = f" writing {e.filename}" if getattr(e, "filename", None) else ""
        console.error(
            f"error: no space left on the device{where} ({e}). Nothing finished is lost: outputs are written whole "
            "or not at all, and finished records stay in the .partial file. Free some space and rerun the same "
            "command to resume."
        )
        raise SystemExit(1) from None
    except Exception as e:
        _name_a_crash(e)
        raise


def _name_a_crash(e: BaseException) -> None:
    """A bug or an unforeseen failure: with a quiet console the traceback goes to the log; name it."""
    from collabloop import console

    if console.is_quiet():
        console.error(f"error: {type(e).__name__}: {str(e)[:500]}; the traceback is in the log")


def disk_full(error: BaseException) -> bool:
    """True for the errors a full disk (or an exhausted quota) raises, from the OS or from SQLite."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(error, sqlite3.OperationalError) and "disk is full" in str(error)


def check_failures(what: str, failed: int, total: int, max_fraction: float) -> None:
    """Raise when more than `max_fraction` of `total` results failed."""
    if total and failed / total > max_fraction:
        raise StageError(
            f"{what}: {failed} of {total} failed ({failed / total:.0%}), above max_failure_fraction={max_fraction:g}. "
            f"Finished records are kept; check the simulator/judge server and rerun the same command."
        )


def end_line(stage: str, output_path: str, meta: dict | None) -> str:
    """The line an entry script prints when its stage ends."""
    from collabloop.stage import format_counts

    if meta is None:
        return f"[{stage}] {output_path} is up to date; nothing to do"
    return f"{format_counts(stage, meta['counts'])} ({meta['seconds']:.0f}s)"


def record_stage_main(stage, doc: str, argv=None) -> None:
    """The story of a record stage's entry script (`stage`: its `StageSpec`): its config, its console and
    log, its run, its end line."""
    from collabloop.config import parse_config
    from collabloop.console import say

    cfg = parse_config(stage.config, stage.name, argv, doc)
    setup_logging(cfg.output_path)
    say(end_line(stage.name, cfg.output_path, stage.run(cfg)))


def trainer_main(stage: str, classes: tuple[type, type], run, doc: str, argv=None, defaults: dict | None = None):
    """The same for a trainer: our arguments and TRL's config (with the machine's defaults under the YAML's)."""
    from collabloop.config import parse_config
    from collabloop.console import say
    from collabloop.training import trainer_defaults

    machine = {**trainer_defaults(), **(defaults or {})}
    ours, trl_args = parse_config(classes, stage, argv, doc, machine_defaults=machine)
    setup_logging(trl_args.output_dir)
    line = trainer_end_line(stage, trl_args.output_dir, run(ours, trl_args))
    if line:
        say(line)


def trainer_end_line(stage: str, output_dir: str, result: dict | None) -> str | None:
    """The line a trainer script prints when it ends; None on the ranks other than the main one."""
    from collabloop.stage import format_counts
    from collabloop.training import is_main_process

    if not is_main_process():
        return None
    if result is None:
        return f"[{stage}] {output_dir} is up to date; nothing to do"
    metrics = {k: round(v, 4) if isinstance(v, float) else v for k, v in result["metrics"].items()}
    return format_counts(stage, {**result["counts"], **metrics})
