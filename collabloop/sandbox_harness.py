"""The inside of the sandbox (collabloop/sandbox.py): the trusted harness and the candidate's child.

Copied into each sandbox's new root as /sandbox.py and run there by the system's python, so it
imports nothing but the standard library. `harness` runs HumanEval's `check(candidate)` (or
BigCodeBench's unittest `TestCases`, whose tests call the entry point by name), where
`candidate` is a proxy to the child: calls go to the child, values come back as plain data
through a strict decoder, and the verdict with the run's nonce is written only once `check`
returned with no refusal. `child` runs the candidate's code under its own uid.
"""

from __future__ import annotations

import builtins
import json
import os
import subprocess
import sys
import traceback
from typing import Any

_MAX_MESSAGE = 8 * 2**20  # one encoded call or return value, in bytes
_MAX_DEPTH = 100  # nesting of one value
ENV = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": "/tmp/work", "LANG": "C.UTF-8"}  # every sandboxed process's
LIBRARIES = "/libraries"  # where the sandbox binds a read-only folder of third-party packages, if given

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


def _run_checks(namespace: dict, proxy: Any) -> None:
    """HumanEval's `check(candidate)`, or BigCodeBench's unittest `TestCases` (its tests call the entry
    point by name): returns only when every test ran and passed, at least one of them."""
    if callable(namespace.get("check")):
        namespace["check"](proxy)
        return
    import unittest

    cases = namespace.get("TestCases")
    if not (isinstance(cases, type) and issubclass(cases, unittest.TestCase)):
        raise ValueError("the tests define neither check(candidate) nor a unittest TestCases class")
    result = unittest.TestResult()
    unittest.defaultTestLoader.loadTestsFromTestCase(cases).run(result)
    if not result.wasSuccessful() or result.testsRun - len(result.skipped) < 1:
        first = (result.failures + result.errors)[:1]
        raise AssertionError(f"TestCases: {len(result.failures)} failed, {len(result.errors)} errors, "
                             f"{len(result.skipped)} skipped of {result.testsRun}" +
                             (f"; first: {first[0][1][-500:]}" if first else ""))


def _use_libraries() -> None:
    """The read-only library folder the sandbox binds (`run_tests(libraries=...)`), for tests and code
    that import third-party packages; after the standard library, so it cannot shadow a module of it."""
    if os.path.isdir(LIBRARIES):
        sys.path.append(LIBRARIES)


def _harness(verdict_fd: int, uid: int | None) -> int:
    _set_process_flags(None)  # before the nonce is read, and before the child exists
    os.set_inheritable(verdict_fd, False)
    job = json.loads(sys.stdin.buffer.read())
    _use_libraries()
    requests, replies = os.pipe(), os.pipe()
    subprocess.Popen([*job["child"], str(requests[0]), str(replies[1])], stdin=subprocess.DEVNULL, cwd="/tmp",
                     env=dict(ENV), close_fds=True, pass_fds=(requests[0], replies[1]))
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
        _run_checks(namespace, proxy)
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
    _use_libraries()
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
