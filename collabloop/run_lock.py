"""One owner per run folder.

`run_loop.sh` takes the lock for its whole run (`python -m collabloop.run_lock take`, on a descriptor the
script keeps open), and `python -m collabloop.driver run` takes it for one stage run by hand. A second
run on a busy folder stops at once, naming the owner. The lock is the kernel's (`flock`): it is let go
when its owner dies, however it dies, so a killed run's folder needs no cleanup; the next owner says
whose lock it took over. The stages an owner starts, and their shards, run under its lock: the owner
passes the folder down in COLLABLOOP_RUN_OWNER, and a driver started under it takes nothing.

    <run_dir>/run.lock        the file the lock is taken on (empty)
    <run_dir>/run.owner.json  who holds it: pid, host, since, command; removed when the owner ends
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from collabloop.jsonl import atomic_file

LOCK = "run.lock"
OWNER = "run.owner.json"
OWNER_ENV = "COLLABLOOP_RUN_OWNER"  # the run folder whose lock an ancestor process holds

logger = logging.getLogger(__name__)


class RunBusy(RuntimeError):
    """The run folder is owned by another live process."""


def _key(run_dir: str | Path) -> str:
    return str(Path(run_dir).resolve())


def held_by_parent(run_dir: str | Path) -> bool:
    """Whether this process runs under the owner of `run_dir` (a stage run_loop.sh started)."""
    return os.environ.get(OWNER_ENV) == _key(run_dir)


def read_owner(run_dir: str | Path) -> dict | None:
    try:
        return json.loads((Path(run_dir) / OWNER).read_text())
    except (OSError, ValueError):
        return None


def describe(owner: dict | None) -> str:
    if not owner:
        return "another process (it has not written its name yet)"
    return f"pid {owner.get('pid')} on {owner.get('host')} since {owner.get('since')} ({owner.get('command')})"


def take(run_dir: str | Path, fd: int, owner_pid: int, command: str) -> str | None:
    """Lock `run_dir` on the open descriptor `fd` (of its run.lock) for `owner_pid`; raises RunBusy when another
    process holds it. Returns a line to show when a dead owner's lock was taken over, else None."""
    run_dir = Path(run_dir)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RunBusy(
            f"{run_dir} is in use by {describe(read_owner(run_dir))}. A run folder has one owner: wait for that "
            f"run to end, stop it (kill {(read_owner(run_dir) or {}).get('pid', '<pid>')}), or use another "
            "--run_dir"
        ) from None
    previous = read_owner(run_dir)
    with atomic_file(run_dir / OWNER) as f:
        json.dump({"pid": owner_pid, "host": socket.gethostname(),
                   "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command}, f)
    if previous and previous.get("pid") != owner_pid:
        return f"{run_dir}: took over the lock of {describe(previous)}, which is no longer running"
    return None


def release(run_dir: str | Path, owner_pid: int) -> None:
    """Remove the owner's name (the lock itself goes with the owner's descriptor)."""
    owner = read_owner(run_dir)
    if owner and owner.get("pid") == owner_pid and owner.get("host") == socket.gethostname():
        (Path(run_dir) / OWNER).unlink(missing_ok=True)


def hold(run_dir: str | Path, command: str) -> str | None:
    """Own `run_dir` for the rest of this process (a driver run by hand); nothing under run_loop.sh's lock.
    Returns the take-over line, if any."""
    if held_by_parent(run_dir):
        return None
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(run_dir) / LOCK, os.O_RDWR | os.O_CREAT, 0o644)  # kept open: the lock lives with it
    line = take(run_dir, fd, os.getpid(), command)
    os.environ[OWNER_ENV] = _key(run_dir)  # what it starts runs under its lock
    atexit.register(release, run_dir, os.getpid())
    return line


def main(argv: list[str] | None = None) -> None:
    """`take --run_dir D --fd N --owner_pid P --command C`: lock D on descriptor N, which the calling shell
    opened on D/run.lock and keeps open (run_loop.sh removes the owner file when it ends)."""
    import argparse

    from collabloop.console import error, say

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["take"])
    parser.add_argument("--run_dir", required=True)
    parser.add_argument("--owner_pid", type=int, required=True)
    parser.add_argument("--fd", type=int, required=True, help="the shell's open descriptor of <run_dir>/run.lock")
    parser.add_argument("--command", dest="owner_command", default="", help="what the owner runs")
    args = parser.parse_args(argv)

    try:
        line = take(args.run_dir, args.fd, args.owner_pid, args.owner_command)
    except RunBusy as busy:
        error(f"error: {busy}")
        raise SystemExit(1) from None
    if line:
        say(line)


if __name__ == "__main__":
    main()
