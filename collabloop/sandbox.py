"""Run untrusted Python (model-written code and its tests) in a throw-away sandbox.

Isolation, all from util-linux and the kernel, no container runtime:
- new network, pid, mount, IPC and UTS namespaces (`unshare`): no network but
  a loopback that is down; the pid namespace dies with its first process, so
  nothing outlives the run;
- fresh tmpfs over /tmp, /var/tmp and /dev/shm: the program's directory is
  thrown away and world-writable host folders are out of reach;
- an unprivileged user (`nobody`, as root) with resource limits (`prlimit`):
  address space, processes (contains fork bombs), CPU seconds, file size,
  open files; and a wall-clock timeout.

When the machine allows none of this (no `unshare`, or namespaces refused),
`SandboxUnavailable` is raised: code is never run unsandboxed by surprise.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from functools import lru_cache

NOBODY = 65534

# Runs inside the namespaces: private tmpfs mounts, then the limited interpreter.
_WRAPPER = r"""
set -e
mount --make-rprivate / 2>/dev/null || true
for d in /tmp /var/tmp /dev/shm; do
  [ -d "$d" ] && mount -t tmpfs -o size=64m,mode=1777 tmpfs "$d"
done
exec "$@"
"""

# Reads the program from stdin into its own folder and runs it as __main__.
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


@dataclass
class SandboxResult:
    status: str  # "pass" (exit 0), "fail" (non-zero exit) or "timeout"
    returncode: int | None
    stdout: str
    stderr: str


def sandbox_python() -> str:
    """An interpreter the unprivileged user can execute (the system's, not a venv under /root)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    raise SandboxUnavailable("no system python3 in /usr/bin or /usr/local/bin for the sandboxed user")


@lru_cache(maxsize=1)
def _base_command() -> tuple[str, ...]:
    unshare = shutil.which("unshare")
    prlimit = shutil.which("prlimit")
    if not unshare or not prlimit:
        raise SandboxUnavailable("the sandbox needs util-linux's unshare and prlimit (apt-get install util-linux)")
    flags = ["--net", "--pid", "--mount", "--ipc", "--uts", "--fork", "--kill-child"]
    if os.geteuid() != 0:
        # Unprivileged: a user namespace maps us to root inside it; limits still bind our real uid.
        flags = ["--user", "--map-root-user", *flags]
    command = (unshare, *flags, "--", "sh", "-c", _WRAPPER, "sandbox")
    probe = subprocess.run([*command, "true"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        raise SandboxUnavailable(f"namespaces are refused on this machine: {probe.stderr.strip()[:300]}")
    return command


def run_python(program: str, limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run `program` in the sandbox; it passes when it exits with status 0."""
    command = list(_base_command())
    if os.geteuid() == 0:
        command += [shutil.which("setpriv"), f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                    "--inh-caps=-all", "--bounding-set=-all"]
    cpu_s = max(1, int(limits.timeout_s) + 1)
    command += [
        shutil.which("prlimit"),
        f"--as={limits.memory_mb * 2**20}",
        f"--nproc={limits.max_processes}",
        f"--cpu={cpu_s}",
        f"--fsize={limits.max_file_mb * 2**20}",
        f"--nofile={limits.max_open_files}",
        "--", sandbox_python(), "-I", "-c", _BOOTSTRAP,
    ]
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp/work", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=env, cwd="/", start_new_session=True, text=True,
    )
    try:
        stdout, stderr = process.communicate(program, timeout=limits.timeout_s)
    except subprocess.TimeoutExpired:
        # --kill-child: when unshare dies, the namespace's first process and all under it die too.
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        return SandboxResult("timeout", None, stdout[-2000:], stderr[-2000:])
    status = "pass" if process.returncode == 0 else "fail"
    return SandboxResult(status, process.returncode, stdout[-2000:], stderr[-2000:])


def check_available() -> None:
    """Raise SandboxUnavailable early (before a stage does any work) when code cannot be sandboxed."""
    _base_command()
    sandbox_python()
