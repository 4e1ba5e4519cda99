"""Run untrusted Python (model-written code) in a throw-away sandbox, and test it so that it cannot lie.

Isolation, from util-linux, coreutils and the kernel, no container runtime:
- new network, pid, mount, IPC and UTS namespaces (`unshare`); `timeout` is the pid namespace's
  first process, so every process of a run dies with it, after `timeout_s` at the latest, even if
  the caller is killed;
- a new root (`pivot_root`): a read-only tmpfs with read-only nosuid binds of `/usr` (and `/bin`,
  `/lib*` where they are folders), five `/dev` nodes, a `/proc` of its own that shows each uid
  only its own processes (`hidepid`), and a `/tmp` tmpfs capped in bytes and inodes. The host's
  files (`/etc`, `/root`, `/work`, world-writable `/run/lock`...) are not there, and all a program
  writes vanishes with its mount namespace;
- as root, each concurrent run gets two uids of its own (`UID_BASE`; the block follows our pid,
  the slot a lease), so `prlimit --nproc` is one run's budget; no capabilities, no new privileges.

`run_python(program)` runs a program; its status is its exit status, which the program controls.
`run_tests(code, tests, entry)` is the one to score with: `tests` (HumanEval's `check(candidate)`)
runs in a trusted harness process (uid A, not dumpable), `code` in a child (uid B, `close_fds`).
`candidate` is a proxy: arguments go to the child and values come back as plain data, decoded by
a strict decoder into exact built-in types (None, bool, int, float, str, list, tuple, dict, set,
frozenset); anything else (a subclass, a rigged `__eq__`, `__bool__` or `__hash__`, a message too
big or too deep, a broken frame) is refused and the run fails, even if `check` catches the error.
Only once `check` returned, with no refusal and at least one call, does the harness write a
verdict with a per-run nonce to a pipe only it holds; the nonce comes on its stdin, read before
the child exists. Exiting with 0, printing success, replacing builtins or monkeypatching modules
(the child's, not the harness's), redefining the tests' helpers (they come from the trusted
`prelude`, the task's prompt) or hunting the nonce in its own memory give no verdict, and the
child cannot signal, ptrace or open the harness: other uid, no capabilities, `hidepid`.

Not promised: without root, a user namespace maps only our uid, so harness and child share it:
the child still cannot read the harness (not dumpable, no capabilities) nor learn the nonce, but
it can kill the harness (scoring 0) and `--nproc` counts all concurrent runs of our real uid.
Containers sharing a kernel but not a pid namespace may draw the same uids. CPU is shared, not
reserved: a fork bomb slows its neighbours down (each run is its own session, so its own autogroup
where enabled). When the machine allows none of this (no `unshare`, or namespaces refused),
`SandboxUnavailable` is raised: code is never run unsandboxed by surprise.
"""

from __future__ import annotations

import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

from collabloop.sandbox_harness import ENV

UID_BASE = 1_000_000_000  # reserved for sandbox runs: no account on a normal machine lives up there
_SLOTS = 64  # concurrent runs per process; each takes two uids
_KEEP = 65536  # bytes of stdout/stderr kept (the tail): a program's output cannot fill our memory

# Runs as root inside the new namespaces, still seeing the host's tree: builds the new root and
# pivots into it. $1 the module (copied in for the harness), $2 a host folder to mount the new
# root on (not one holding the module), $3 seconds, $4 /tmp's MiB, $5 its inodes, $6 a folder of
# third-party packages to bind read-only at /libraries ("-": none); then the command.
_WRAPPER = r"""
set -eu
umask 022
module=$1 root=$2 seconds=$3 tmp_mb=$4 files=$5 libraries=$6
shift 6
mount -t tmpfs -o size=2m,nr_inodes=64,mode=0755 sandbox-root "$root"
mkdir "$root/usr" "$root/proc" "$root/dev" "$root/tmp" "$root/.old"
mount --bind -o ro,nosuid,nodev /usr "$root/usr"
if [ "$libraries" != - ]; then
  mkdir "$root/libraries"; mount --bind -o ro,nosuid,nodev "$libraries" "$root/libraries"
  mount -o remount,bind,ro,nosuid,nodev "$root/libraries"
fi
for d in /bin /sbin /lib /lib32 /lib64 /libx32; do
  if [ -L "$d" ]; then ln -s "$(readlink "$d")" "$root$d"
  elif [ -d "$d" ]; then mkdir "$root$d"; mount --bind -o ro,nosuid,nodev "$d" "$root$d"
  fi
done
for f in null zero full random urandom; do touch "$root/dev/$f"; mount --bind "/dev/$f" "$root/dev/$f"; done
mount -t tmpfs -o "size=${tmp_mb}m,nr_inodes=$files,mode=1777,nosuid,nodev" sandbox-tmp "$root/tmp"
mount -t proc -o nosuid,nodev,noexec,hidepid=2,subset=pid proc "$root/proc" 2>/dev/null ||
  mount -t proc -o nosuid,nodev,noexec,hidepid=2 proc "$root/proc"
cp "$module" "$root/sandbox.py"
cd "$root"
pivot_root . .old
umount -l /.old
rmdir /.old
mount -o remount,bind,ro /
exec timeout -s KILL "$seconds" "$@"
"""

# run_python: reads the program from stdin into its own folder and runs it as __main__.
_BOOTSTRAP = (
    "import os, sys; os.makedirs('/tmp/work', exist_ok=True); os.chdir('/tmp/work'); "
    "src = sys.stdin.read(); open('program.py', 'w').write(src); sys.stdin.close(); "
    "sys.argv = ['program.py']; exec(compile(src, 'program.py', 'exec'), {'__name__': '__main__'})"
)


class SandboxUnavailable(RuntimeError):
    """This machine cannot sandbox code; the message says why."""


@dataclass
class SandboxLimits:
    timeout_s: float = 10.0
    memory_mb: int = 512
    max_processes: int = 32
    max_file_mb: int = 16
    max_open_files: int = 64
    tmp_mb: int = 64  # all the program may write, in /tmp (nothing else is writable)
    max_files: int = 1024  # files and folders in /tmp


@dataclass
class SandboxResult:
    status: str  # "pass", "fail" or "timeout"; for run_python "pass" only means exit status 0
    returncode: int | None
    stdout: str
    stderr: str
    elapsed_s: float = 0.0


def sandbox_python() -> str:
    """An interpreter the unprivileged user can execute (the system's, under /usr, not a venv)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    raise SandboxUnavailable("no system python3 in /usr/bin or /usr/local/bin for the sandboxed user")


@lru_cache(maxsize=1)
def _tools() -> dict[str, str]:
    # Looked up where the wrapper will look: it runs with our PATH, inside as outside the new root.
    names = ("unshare", "prlimit", "setpriv", "timeout", "pivot_root", "mount", "umount")
    found = {name: shutil.which(name, path=ENV["PATH"]) for name in names}
    missing = sorted(name for name, path in found.items() if not path)
    if missing:
        raise SandboxUnavailable(f"the sandbox needs {', '.join(missing)} (apt-get install util-linux coreutils)")
    return {name: str(path) for name, path in found.items()}


def _unshare() -> list[str]:
    flags = ["--net", "--pid", "--mount", "--ipc", "--uts", "--fork", "--kill-child"]
    if os.geteuid() != 0:
        flags = ["--user", "--map-root-user", *flags]  # unprivileged: root inside a user namespace
    return [_tools()["unshare"], *flags, "--"]


class _UidPool:
    """Two uids per run, never shared by two live runs: the pid picks this process's block, a
    lease picks the slot in it (runs of other threads wait when all slots are taken)."""

    def __init__(self) -> None:
        self._free = list(range(_SLOTS))
        self._cond = threading.Condition()

    @contextmanager
    def lease(self) -> Iterator[tuple[int, int] | None]:
        if os.geteuid() != 0:
            yield None  # a user namespace maps only our own uid: there is no other to give
            return
        with self._cond:
            self._cond.wait_for(lambda: self._free)
            slot = self._free.pop()
        try:
            first = UID_BASE + (os.getpid() * _SLOTS + slot) * 2
            yield first, first + 1
        finally:
            with self._cond:
                self._free.append(slot)
                self._cond.notify()


_UIDS = _UidPool()


def _as_user(uid: int | None) -> list[str]:
    """setpriv: become `uid` (as root) and drop every capability and the right to regain one."""
    switch = [f"--reuid={uid}", f"--regid={uid}", "--clear-groups"] if uid is not None else []
    return [_tools()["setpriv"], *switch, "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]


def _limited(limits: SandboxLimits, nproc: bool) -> list[str]:
    command = [
        _tools()["prlimit"], f"--as={limits.memory_mb * 2**20}", f"--cpu={max(1, int(limits.timeout_s) + 1)}",
        f"--fsize={limits.max_file_mb * 2**20}", f"--nofile={limits.max_open_files}", "--core=0",
    ]
    return [*command, f"--nproc={limits.max_processes}"] if nproc else command


def _wait_until_gone(uids: tuple[int, int], patience_s: float = 10.0) -> None:
    def alive(pid: str) -> bool:
        try:
            with open(f"/proc/{pid}/status") as status:
                return any(line.startswith("Uid:") and int(line.split()[1]) in uids for line in status)
        except (OSError, ValueError):
            return False

    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline and any(alive(pid) for pid in os.listdir("/proc") if pid.isdigit()):
        time.sleep(0.05)


def _root_mount_point(module: str) -> str:
    """A host folder to mount the new root on; it is hidden in the namespace, so not the module's."""
    for folder in ("/tmp", "/mnt", "/media", "/srv", "/opt", "/var/tmp"):
        if os.path.isdir(folder) and not module.startswith(folder + "/"):
            return folder
    raise SandboxUnavailable(f"no folder to mount the sandbox's root on outside {module}")


def _read_all(process: subprocess.Popen, payload: bytes, verdict_r: int | None, deadline: float):
    """Feed stdin, keep the tail of stdout/stderr and the head of the verdict pipe, until every
    writer has closed them or the deadline passes. Returns ({fd: bytes}, deadline_passed)."""

    def feed() -> None:
        try:
            process.stdin.write(payload)
            process.stdin.close()
        except OSError:
            pass  # the sandbox stopped reading: its result will say why

    threading.Thread(target=feed, daemon=True).start()
    out, err = process.stdout.fileno(), process.stderr.fileno()
    kept = {out: bytearray(), err: bytearray(), **({verdict_r: bytearray()} if verdict_r is not None else {})}
    with selectors.DefaultSelector() as selector:
        for fd in kept:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return kept, True
            for key, _ in selector.select(left):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fd)
                    continue
                kept[key.fd] += chunk
                if key.fd == verdict_r:
                    del kept[key.fd][4096:]
                else:
                    del kept[key.fd][:-_KEEP]
    return kept, False


def _launch(command: list[str], payload: bytes, limits: SandboxLimits, verdict: tuple[int, int] | None,
            uids: tuple[int, int] | None, libraries: str | None = None):
    """Start `command` in a fresh sandbox; returns (returncode, stdout, stderr, verdict, elapsed_s, timed_out)."""
    module = os.path.join(os.path.dirname(os.path.realpath(__file__)), "sandbox_harness.py")
    full = [*_unshare(), "/bin/sh", "-c", _WRAPPER, "sandbox", module, _root_mount_point(module),
            f"{limits.timeout_s:g}", str(limits.tmp_mb), str(limits.max_files), libraries or "-", *command]
    start = time.monotonic()
    try:
        process = subprocess.Popen(
            full, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(ENV), cwd="/",
            start_new_session=True, pass_fds=(verdict[1],) if verdict else (),
        )
    finally:
        if verdict:
            os.close(verdict[1])  # the sandbox now holds the only write end
    out, err = process.stdout.fileno(), process.stderr.fileno()
    killed = False
    try:
        # Inside, `timeout` ends everything at timeout_s; this backstop covers the setup around it.
        kept, killed = _read_all(process, payload, verdict[0] if verdict else None, start + limits.timeout_s + 5)
        if not killed:
            process.wait(timeout=5)  # unshare returns once its pid namespace is empty
    except subprocess.TimeoutExpired:
        killed = True
    finally:
        if process.poll() is None:
            killed = True
            os.killpg(process.pid, signal.SIGKILL)  # --kill-child takes the namespace along
        process.wait()
        process.stdout.close()
        process.stderr.close()
    if killed and uids:
        _wait_until_gone(uids)  # the namespace dies asynchronously: its uids are not free before
    elapsed = time.monotonic() - start
    timed_out = killed or (process.returncode != 0 and elapsed >= limits.timeout_s)
    text = [bytes(kept[fd])[-8000:].decode(errors="replace")[-2000:] for fd in (out, err)]
    return process.returncode, text[0], text[1], bytes(kept[verdict[0]]) if verdict else b"", elapsed, timed_out


def run_python(program: str, limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run `program` in the sandbox as its own uid. "pass" means exit status 0, which the program
    controls: never score untrusted code with this, use `run_tests`."""
    check_available()
    with _UIDS.lease() as uids:
        command = [*_limited(limits, nproc=True), *_as_user(uids[1] if uids else None),
                   sandbox_python(), "-I", "-B", "-c", _BOOTSTRAP]
        code, out, err, _, elapsed, timed_out = _launch(command, program.encode(), limits, None, uids)
    status = "timeout" if timed_out else "pass" if code == 0 else "fail"
    return SandboxResult(status, None if timed_out else code, out, err, elapsed)


def run_tests(code: str, tests: str, entry: str, prelude: str = "",
              limits: SandboxLimits = SandboxLimits(), libraries: str | None = None) -> SandboxResult:
    """Run `check(entry)` (or the unittest `TestCases`) from `tests` against `code`; "pass" if and only
    if the harness's verdict arrived: every call returned plain data and every test passed. `prelude`
    (trusted, e.g. the task's prompt) runs before `tests` in the harness and defines the helpers the
    tests use. `libraries`: a host folder of third-party packages (a site-packages) that the tests and
    the code may import, bound read-only."""
    check_available()
    return _run_tests(code, tests, entry, prelude, limits, check_libraries(libraries))


def check_libraries(libraries: str | None) -> str | None:
    """The library folder as the sandbox binds it (absolute), or a clear error; None or "" for none."""
    if not libraries:
        return None
    path = os.path.realpath(libraries)
    if not os.path.isdir(path):
        raise SandboxUnavailable(f"sandbox libraries {libraries!r}: no such folder (give a site-packages folder "
                                 "whose packages the tasks import)")
    return path


def _run_tests(code: str, tests: str, entry: str, prelude: str, limits: SandboxLimits,
               libraries: str | None = None) -> SandboxResult:
    nonce = secrets.token_hex(16)
    with _UIDS.lease() as uids:
        harness_uid, child_uid = uids if uids else (None, None)
        child = [*_limited(limits, nproc=True), *_as_user(child_uid), sandbox_python(), "-I", "-B",
                 "/sandbox.py", "child"]
        job = {"code": code, "tests": tests, "entry": entry, "prelude": prelude, "nonce": nonce, "child": child}
        # As root the harness starts as root, to start the child as B, then becomes A itself.
        drop = [] if harness_uid is not None else _as_user(None)
        verdict = os.pipe()
        try:
            command = [*_limited(limits, nproc=False), *drop, sandbox_python(), "-I", "-B", "/sandbox.py",
                       "harness", str(verdict[1]), str(harness_uid if harness_uid is not None else "-")]
            rc, out, err, said, elapsed, timed_out = _launch(command, json.dumps(job).encode(), limits, verdict, uids,
                                                             libraries)
        finally:
            os.close(verdict[0])
    if said == f"{nonce} passed\n".encode():
        return SandboxResult("pass", rc, out, err, elapsed)
    return SandboxResult("timeout" if timed_out else "fail", None if timed_out else rc, out, err, elapsed)


@lru_cache(maxsize=1)
def _probe() -> None:
    result = _run_tests("def f():\n    return 1\n", "def check(c):\n    assert c() == 1\n", "f", "",
                        SandboxLimits(timeout_s=30))
    if result.status != "pass":
        raise SandboxUnavailable(f"the sandbox does not start here: {result.stderr.strip()[-300:]}")


def check_available() -> None:
    """Raise SandboxUnavailable early (before a stage does any work) when code cannot be sandboxed."""
    _tools()
    sandbox_python()
    _probe()
