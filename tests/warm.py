"""Stage scripts run as processes forked from a warm interpreter (tests only).

A stage that runs vLLM spends about 14 s of a 2-core machine importing torch, vLLM, transformers and litellm
before its first line of work, and the suite starts dozens of such processes. Here one server process
imports them once (tests/warm_imports.py); each run is a fork of it that takes its own working directory,
environment, argv and output files, then runs the script as `python SCRIPT ARGS...` would: the real
script, its `__main__` block, its exit status and its signals (a SIGKILL is a SIGKILL, the returncode
-9). What differs from a fresh interpreter is only that those libraries are already imported;
collabloop's own modules are imported by each run. The loop's own test runs `run_loop.sh`, whose
stages start fresh interpreters, and tests that need a process of their own (a private mount namespace,
an `accelerate launch`) use subprocess.

    result = run([PYTHON, "generation/generate.py", ...], cwd=REPO, timeout=900)  # a CompletedProcess
    process = start([PYTHON, "generation/generate.py", ...], cwd=REPO)          # pid, poll, wait, kill

The server is single-threaded (a fork of a threaded process may inherit a held lock): it polls for new
requests and for ended children, and answers each request with the child's pid, then its exit status.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAX_REQUEST_BYTES = 16 * 1024 * 1024


# --- the server and its children ---------------------------------------------------------------------------


def _become_script(request: dict) -> int:
    """In the fork: run the script as `python SCRIPT ARGS...` would; its exit status."""
    import runpy
    import traceback

    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    script = os.path.abspath(request["script"])
    sys.argv = [request["script"], *request["args"]]
    sys.path[0] = os.path.dirname(script)  # `python SCRIPT` puts the script's folder first
    try:
        runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 1
        if not isinstance(exit_.code, (int, type(None))):
            print(exit_.code, file=sys.stderr)
    except BaseException:  # what the interpreter prints for an uncaught exception, and its status
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    return code


def _serve(socket_path: str) -> None:
    import tests.warm_imports  # noqa: F401  (the point of the server)

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(64)
    print("ready", flush=True)
    waiting: dict[int, socket.socket] = {}  # child pid -> the connection that asked for it
    while True:
        readable, _, _ = select.select([listener], [], [], 0.02)
        if readable:
            conn, _ = listener.accept()
            message, fds, _, _ = socket.recv_fds(conn, MAX_REQUEST_BYTES, 2)
            request = json.loads(message)
            pid = os.fork()
            if pid == 0:  # the child: stdout and stderr are the client's files
                code = 1
                try:
                    listener.close()
                    conn.close()
                    for other in waiting.values():
                        other.close()
                    for fd, target in zip((1, 2), fds):
                        os.dup2(target, fd)
                        os.close(target)
                    code = _become_script(request)
                finally:
                    for stream in (sys.stdout, sys.stderr):
                        try:
                            stream.flush()
                        except Exception:  # a closed stream: nothing more to say on it
                            pass
                    os._exit(code)
            for fd in fds:
                os.close(fd)
            conn.sendall(f"{pid}\n".encode())
            waiting[pid] = conn
        while waiting:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            conn = waiting.pop(pid, None)
            if conn is not None:
                try:
                    conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
                except OSError:  # the client went away
                    pass
                conn.close()


# --- the client ----------------------------------------------------------------------------------------------


_server: dict = {}


def start_server() -> None:
    """Start the server without waiting for it (its imports take a while): at the session's start, so
    that they overlap the first tests. Its environment is this process's, now."""
    if _server.get("process") is not None and _server["process"].poll() is None:
        return
    folder = tempfile.mkdtemp(prefix="warm-")
    log_path = os.path.join(folder, "server.log")
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "tests.warm", os.path.join(folder, "server.sock")],
                                   cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True)
    _server.update(process=process, socket=os.path.join(folder, "server.sock"), log=log_path, ready=False)
    atexit.register(process.kill)


def _server_socket() -> str:
    """The server's socket path, once it is ready (started here if need be)."""
    if _server.get("process") is None or _server["process"].poll() is not None:
        start_server()
    if not _server["ready"]:
        if _server["process"].stdout.readline().strip() != "ready":
            raise RuntimeError(f"the warm server did not start; see {_server['log']}")
        _server["ready"] = True
    return _server["socket"]


class WarmProcess:
    """A running script: the parts of subprocess.Popen the tests use."""

    def __init__(self, argv: list[str], cwd: str | Path, env: dict | None):
        if len(argv) < 2 or argv[0] != sys.executable or argv[1].startswith("-"):
            raise ValueError(f"expected [{sys.executable}, SCRIPT, ...], got {argv[:2]}")
        self.args = argv
        self.returncode: int | None = None
        self._folder = tempfile.TemporaryDirectory(prefix="warm-run-")
        self._paths = [os.path.join(self._folder.name, name) for name in ("stdout", "stderr")]
        request = {"script": str(argv[1]), "args": [str(a) for a in argv[2:]], "cwd": str(cwd),
                   "env": dict(os.environ if env is None else env)}
        files = [open(p, "wb") for p in self._paths]
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._conn.connect(_server_socket())
        socket.send_fds(self._conn, [json.dumps(request).encode()], [f.fileno() for f in files])
        for f in files:
            f.close()
        self._received = b""
        self.pid = int(self._line(None))

    def _line(self, timeout: float | None) -> str | None:
        """The server's next line, or None if none came within `timeout` seconds."""
        while b"\n" not in self._received:
            if timeout is not None and not select.select([self._conn], [], [], max(timeout, 0))[0]:
                return None
            chunk = self._conn.recv(4096)
            if not chunk:
                raise RuntimeError(f"the warm server ended before its child {getattr(self, 'pid', '')} did")
            self._received += chunk
        line, self._received = self._received.split(b"\n", 1)
        return line.decode()

    def _read_status(self, timeout: float | None) -> None:
        if self.returncode is None and (line := self._line(timeout)) is not None:
            self.returncode = int(line)
            self._conn.close()

    def poll(self) -> int | None:
        self._read_status(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._read_status(timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, 9)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Wait for the end; its stdout and stderr as text."""
        self.wait(timeout)
        out, err = (Path(p).read_text(errors="replace") for p in self._paths)
        self._folder.cleanup()
        return out, err


def start(argv: list[str], *, cwd: str | Path, env: dict | None = None) -> WarmProcess:
    return WarmProcess(argv, cwd, env)


def run(argv: list[str], *, cwd: str | Path, env: dict | None = None, timeout: float) -> subprocess.CompletedProcess:
    """As subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)."""
    process = start(argv, cwd=cwd, env=env)
    deadline = time.monotonic() + timeout
    try:
        out, err = process.communicate(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate(max(deadline - time.monotonic(), 30))
        raise
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


if __name__ == "__main__":
    _serve(sys.argv[1])
