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

import builtins
import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

UID_BASE = 1_000_000_000  # reserved for sandbox runs: no account on a normal machine lives up there
_SLOTS = 64  # concurrent runs per process; each takes two uids
_KEEP = 65536  # bytes of stdout/stderr kept (the tail): a program's output cannot fill our memory
_MAX_MESSAGE = 8 * 2**20  # one encoded call or return value, in bytes
_MAX_DEPTH = 100  # nesting of one value
_ENV = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": "/tmp/work", "LANG": "C.UTF-8"}

# Runs as root inside the new namespaces, still seeing the host's tree: builds the new root and
# pivots into it. $1 the module (copied in for the harness), $2 a host folder to mount the new
# root on (not one holding the module), $3 seconds, $4 /tmp's MiB, $5 its inodes; then the command.
_WRAPPER = r"""
set -eu
umask 022
module=$1 root=$2 seconds=$3 tmp_mb=$4 files=$5
shift 5
mount -t tmpfs -o size=2m,nr_inodes=64,mode=0755 sandbox-root "$root"
mkdir "$root/usr" "$root/proc" "$root/dev" "$root/tmp" "$root/.old"
mount --bind -o ro,nosuid,nodev /usr "$root/usr"
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
    found = {name: shutil.which(name, path=_ENV["PATH"]) for name in names}
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
            uids: tuple[int, int] | None):
    """Start `command` in a fresh sandbox; returns (returncode, stdout, stderr, verdict, elapsed_s, timed_out)."""
    module = os.path.realpath(__file__)
    full = [*_unshare(), "/bin/sh", "-c", _WRAPPER, "sandbox", module, _root_mount_point(module),
            f"{limits.timeout_s:g}", str(limits.tmp_mb), str(limits.max_files), *command]
    start = time.monotonic()
    try:
        process = subprocess.Popen(
            full, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(_ENV), cwd="/",
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
              limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run `check(entry)` from `tests` against `code`; "pass" if and only if the harness's verdict
    arrived: every call returned plain data and `check` returned. `prelude` (trusted, e.g. the
    task's prompt) runs before `tests` in the harness and defines the helpers the tests use."""
    check_available()
    return _run_tests(code, tests, entry, prelude, limits)


def _run_tests(code: str, tests: str, entry: str, prelude: str, limits: SandboxLimits) -> SandboxResult:
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
            rc, out, err, said, elapsed, timed_out = _launch(command, json.dumps(job).encode(), limits, verdict, uids)
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


# ---- Inside the sandbox (the system's python, stdlib only): the harness and the child. ----

_PLAIN = {list: "l", tuple: "t", set: "S", frozenset: "F"}
_TYPES = {tag: kind for kind, tag in _PLAIN.items()}


def _encode(value: Any, depth: int = 0) -> list:
    """Plain data as tagged JSON; exact built-in types only (`type(x) is`), never a subclass."""
    kind = type(value)
    if depth > _MAX_DEPTH:
        raise ValueError("nested too deeply")
    if value is None:
        return ["n"]
    if kind is bool or kind is str:
        return ["b" if kind is bool else "s", value]
    if kind is int:
        return ["i", format(value, "x")]  # hex: exact at any size
    if kind is float:
        return ["f", value.hex()]  # exact, and inf and nan too
    for container, tag in _PLAIN.items():
        if kind is container:  # `is`, not `in`: a metaclass may rig the type's own __eq__
            return [tag, [_encode(item, depth + 1) for item in value]]
    if kind is dict:
        return ["d", [[_encode(k, depth + 1), _encode(v, depth + 1)] for k, v in value.items()]]
    raise TypeError(f"not plain data: {kind.__name__}")


def _decode(data: Any, depth: int = 0) -> Any:
    """The inverse of _encode, for data the other side may have forged: anything else is refused."""
    if depth > _MAX_DEPTH or type(data) is not list or not data or type(data[0]) is not str:
        raise ValueError("not an encoded value")
    tag, body = data[0], data[1:]
    if tag == "n" and not body:
        return None
    if len(body) != 1:
        raise ValueError(f"bad value {tag!r}")
    item = body[0]
    if tag in ("b", "s") and type(item) is (bool if tag == "b" else str):
        return item
    if tag in ("i", "f") and type(item) is str:
        return int(item, 16) if tag == "i" else float.fromhex(item)
    if tag in _TYPES and type(item) is list:
        return _TYPES[tag](_decode(x, depth + 1) for x in item)
    if tag == "d" and type(item) is list and all(type(p) is list and len(p) == 2 for p in item):
        return {_decode(k, depth + 1): _decode(v, depth + 1) for k, v in item}
    raise ValueError(f"bad value {tag!r}")


def _send(fd: int, message: list) -> None:
    data = json.dumps(message).encode()
    if len(data) > _MAX_MESSAGE:
        raise ValueError(f"message of {len(data)} bytes")
    view = memoryview(len(data).to_bytes(4, "big") + data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd: int, size: int) -> bytes:
    parts, left = [], size
    while left:
        chunk = os.read(fd, min(left, 2**20))
        if not chunk:
            raise EOFError("the other side closed the channel")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _recv(fd: int) -> Any:
    size = int.from_bytes(_read_exact(fd, 4), "big")
    if size > _MAX_MESSAGE:
        raise ValueError(f"message of {size} bytes")
    return json.loads(_read_exact(fd, size))


class _Refused(Exception):
    """The child broke the protocol or sent what is not plain data; the run cannot pass."""


class CandidateError(Exception):
    """The candidate raised an exception that is not a built-in one."""


class _Child:
    """The harness's end of the channel to the child; `proxy(name)` is what `check` calls."""

    def __init__(self, requests: int, replies: int) -> None:
        self.requests, self.replies, self.calls, self.refusal = requests, replies, 0, ""

    def ask(self, message: list) -> list:
        try:
            _send(self.requests, message)
            reply = _recv(self.replies)
        except (OSError, EOFError, ValueError, TypeError, RecursionError) as e:
            reply = ["refused", f"channel: {type(e).__name__}: {e}"]
        if type(reply) is not list or not reply or reply[0] not in ("ok", "raise", "ready", "refused"):
            reply = ["refused", "bad reply"]
        if reply[0] == "refused":
            self.refusal = self.refusal or str(reply[1:])[:300]  # remembered: `check` cannot swallow it
            raise _Refused(self.refusal)
        return reply

    def proxy(self, name: str):
        def candidate(*args: Any, **kwargs: Any) -> Any:
            try:
                request = ["call", name, _encode(args), _encode(kwargs)]
            except (TypeError, ValueError) as e:
                self.refusal = f"arguments: {e}"
                raise _Refused(self.refusal) from None
            reply = self.ask(request)
            self.calls += 1
            if reply[0] == "raise" and len(reply) == 3 and all(type(x) is str for x in reply[1:]):
                error = _builtin_exception(reply[1], reply[2])
                if not isinstance(error, Exception):  # SystemExit and kin: no `except Exception` may swallow it
                    self.refusal = f"the candidate raised {reply[1]}"
                raise error
            if reply[0] != "ok" or len(reply) != 2:
                self.refusal = "bad reply"
                raise _Refused(self.refusal)
            try:
                value = _decode(reply[1])
            except (ValueError, TypeError, RecursionError, OverflowError) as e:
                self.refusal = f"value: {e}"
                raise _Refused(self.refusal) from None
            return value

        candidate.__name__ = name
        return candidate


def _builtin_exception(name: str, message: str) -> BaseException:
    """A fresh built-in exception of that name (the tests may expect one), else CandidateError."""
    kind = getattr(builtins, name, None)
    if isinstance(kind, type) and issubclass(kind, BaseException):
        try:
            return kind(message)
        except TypeError:
            pass  # needs other arguments (UnicodeDecodeError...)
    return CandidateError(f"{name}: {message}")


def _set_process_flags(uid: int | None) -> None:
    """Become `uid` (when given) and make this process non-dumpable: no ptrace, no /proc/<pid>/mem
    or fd/ for anyone without CAP_SYS_PTRACE, even with the same uid."""
    import ctypes

    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)  # drops every capability
    libc = ctypes.CDLL(None, use_errno=True)
    for option, value in ((38, 1), (4, 0)):  # PR_SET_NO_NEW_PRIVS, PR_SET_DUMPABLE
        if libc.prctl(option, value, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl")


def _harness(verdict_fd: int, uid: int | None) -> int:
    _set_process_flags(None)  # before the nonce is read, and before the child exists
    os.set_inheritable(verdict_fd, False)
    job = json.loads(sys.stdin.buffer.read())
    requests, replies = os.pipe(), os.pipe()
    subprocess.Popen([*job["child"], str(requests[0]), str(replies[1])], stdin=subprocess.DEVNULL, cwd="/tmp",
                     env=dict(_ENV), close_fds=True, pass_fds=(requests[0], replies[1]))
    os.close(requests[0])
    os.close(replies[1])
    _set_process_flags(uid)
    child = _Child(requests[1], replies[0])
    try:
        loaded = child.ask(["load", job["code"]])
        if loaded[0] != "ready":
            raise CandidateError(f"the candidate's code did not load: {str(loaded)[:300]}")
        namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
        exec(compile(job["prelude"], "prompt.py", "exec"), namespace)
        proxy = child.proxy(job["entry"])
        namespace[job["entry"]] = proxy  # tests may call the entry point by its name
        exec(compile(job["tests"], "tests.py", "exec"), namespace)
        namespace["check"](proxy)
    except BaseException:
        traceback.print_exc()
        return 1
    if child.refusal or child.calls == 0:
        sys.stderr.write(f"harness: no verdict: {child.refusal or 'check never called the candidate'}\n")
        return 1
    os.write(verdict_fd, f"{job['nonce']} passed\n".encode())
    return 0


def _child(requests: int, replies: int) -> int:
    os.makedirs("/tmp/work", exist_ok=True)
    os.chdir("/tmp/work")
    sys.argv = ["candidate.py"]
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    try:
        exec(compile(_recv(requests)[1], "candidate.py", "exec"), namespace)
        reply: list = ["ready"]
    except BaseException as e:
        reply = _raised(e)
    _send(replies, reply)
    while True:
        try:
            _, name, args, kwargs = _recv(requests)
        except EOFError:
            return 0
        try:
            value = namespace[name](*_decode(args), **_decode(kwargs))
        except BaseException as e:
            _send(replies, _raised(e))
            continue
        try:
            _send(replies, ["ok", _encode(value)])
        except (TypeError, ValueError, RecursionError) as e:
            _send(replies, ["refused", f"{type(e).__name__}: {e}"[:300]])


def _raised(error: BaseException) -> list:
    try:
        return ["raise", str(type(error).__name__), str(error)[:500]]
    except BaseException:
        return ["raise", "Exception", ""]


if __name__ == "__main__":
    if sys.argv[1:2] == ["harness"]:
        sys.exit(_harness(int(sys.argv[2]), None if sys.argv[3] == "-" else int(sys.argv[3])))
    if sys.argv[1:2] == ["child"]:
        os._exit(_child(int(sys.argv[2]), int(sys.argv[3])))
