"""The code sandbox as a jail: its processes, its uids, its /proc and file system, its write limits, what
survives it, and refusal where it cannot be built (tests/test_sandbox.py scores the hostile corpus)."""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from collabloop import sandbox
from collabloop.sandbox import SandboxLimits, SandboxUnavailable, run_python
from tests.test_sandbox import FAST, REPO, canonical, item, score


def our_uid_block() -> range:
    first = sandbox.UID_BASE + os.getpid() * sandbox._SLOTS * 2
    return range(first, first + sandbox._SLOTS * 2)


def processes_with_uids(uids: range) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
        if uid in uids:
            found.append(pid)
    return found


@pytest.mark.slow  # a fork bomb runs to its limit and its timeout
@pytest.mark.skipif(os.geteuid() != 0, reason="per-run uids need root")
def test_fork_bomb_beside_three_correct_programs(problems):
    """Correct programs that start a process of their own, while a fork bomb holds its whole process
    budget (it starts first). With one uid for all sandboxes they could not start one."""
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    starts = "import subprocess, sys\nsubprocess.run([sys.executable, '-c', 'pass'], check=True)\n"
    limits = SandboxLimits(timeout_s=8)
    bombed: list = []
    thread = threading.Thread(target=lambda: bombed.extend(score([item(problems[2], bomb)], sandbox_limits=limits)))
    thread.start()
    time.sleep(2)  # the bomb is at its limit by now
    correct = [item(problems[i], starts + canonical(problems[i])) for i in (0, 13, 27)]
    assert score(correct, sandbox_workers=3, sandbox_limits=limits) == [1.0, 1.0, 1.0]
    thread.join()
    assert bombed == [0.0]
    assert processes_with_uids(our_uid_block()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="per-run uids need root")
def test_a_daemon_does_not_outlive_its_run():
    program = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n" \
              "        time.sleep(60)\n    os._exit(0)\nprint('started')\n"
    result = run_python(program, FAST)
    assert result.status == "pass" and result.elapsed_s < 4, result
    assert processes_with_uids(our_uid_block()) == []


def test_proc_shows_only_the_sandboxs_own_processes():
    program = "import os\nprint(sorted(p for p in os.listdir('/proc') if p.isdigit()), os.getpid())"
    result = run_python(program, FAST)
    pids, own = result.stdout.rsplit(" ", 1)
    assert result.status == "pass" and eval(pids) == [own.strip()], result.stdout


@pytest.mark.parametrize("path", ["/etc/passwd", "/etc/hostname", "/root", "/work", str(REPO), str(REPO / "README.md"),
                                  "/home", "/proc/1/environ", "/sys/kernel"])
def test_host_files_are_not_readable(path):
    program = f"import os\np = {path!r}\ntry:\n    print(os.listdir(p) if os.path.isdir(p) else open(p).read(64))\n" \
              "    print('READ')\nexcept OSError as e:\n    print('refused', type(e).__name__)\n"
    result = run_python(program, FAST)
    assert result.status == "pass" and "refused" in result.stdout and "READ" not in result.stdout, result.stdout


def test_the_root_holds_only_what_python_needs_and_only_tmp_is_writable():
    program = textwrap.dedent("""
        import os
        print(sorted(os.listdir("/")))
        for path in ("/x", "/usr/x", "/usr/lib/x", "/dev/x", "/proc/x", "/sandbox.py", "/tmp/ok"):
            try:
                open(path, "a").write("x")
                print("WROTE", path)
            except OSError:
                pass
    """)
    result = run_python(program, FAST)
    lines = result.stdout.splitlines()
    assert set(eval(lines[0])) <= {"bin", "dev", "lib", "lib32", "lib64", "libx32", "proc", "sandbox.py", "sbin",
                                   "tmp", "usr"}
    assert lines[1:] == ["WROTE /tmp/ok"], result.stdout


HOST_SCRATCH = ["/run/lock", "/var/lock", "/tmp", "/dev/shm", "/var/tmp"]


def test_nothing_a_program_writes_survives_it():
    marker = f"sandbox-escape-{uuid.uuid4().hex[:12]}"
    program = textwrap.dedent(f"""
        import os
        written = 0
        for root, dirs, files in os.walk("/"):
            dirs[:] = [d for d in dirs if os.path.join(root, d) not in ("/proc", "/sys")]
            if os.access(root, os.W_OK):
                for i in range(2000):
                    try:
                        open(os.path.join(root, "{marker}-%d" % i), "w").write("x")
                        written += 1
                    except OSError:
                        break
        for folder in {HOST_SCRATCH!r}:
            try:
                for i in range(10000):
                    open(os.path.join(folder, "{marker}-lock-%d" % i), "w").close()
                    written += 1
            except OSError:
                pass
        print(written)
    """)
    before = {folder: set(os.listdir(folder)) for folder in HOST_SCRATCH if os.path.isdir(folder)}
    result = run_python(program, SandboxLimits(timeout_s=10, max_files=500))
    assert result.status == "pass", result.stderr
    assert 0 < int(result.stdout) < 500  # it could write, in its own /tmp only, and only so many files
    for folder, names in before.items():
        left = [n for n in set(os.listdir(folder)) - names if n.startswith(marker)]
        assert left == [], f"{len(left)} files left in {folder}"


def test_file_count_and_size_are_capped():
    program = textwrap.dedent("""
        import os
        n = 0
        try:
            while True:
                open(f"/tmp/n{n}", "w").close()
                n += 1
        except OSError:
            pass
        for i in range(n):
            os.unlink(f"/tmp/n{i}")
        size = 0
        try:
            for i in range(100):
                with open(f"/tmp/big{i}", "wb") as f:
                    for _ in range(4):
                        f.write(b"x" * 2**20)
                        f.flush()
                        size += 2**20
        except OSError:
            pass
        print(n, size)
    """)
    result = run_python(program, SandboxLimits(timeout_s=10, max_files=200, tmp_mb=8))
    files, size = map(int, result.stdout.split())
    assert 0 < files < 200 and 0 < size <= 8 * 2**20, result.stdout


def test_without_unshare_the_metric_refuses_to_run(problems, monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(sandbox.shutil, "which", lambda name, *a, **k: None if name == "unshare" else
                        real_which(name, *a, **k))
    for cached in (getattr(sandbox, "_tools", None), getattr(sandbox, "_probe", None),
                   getattr(sandbox, "_base_command", None)):
        if cached is not None:
            cached.cache_clear()
    try:
        with pytest.raises(SandboxUnavailable):
            run_python("print(1)")
        with pytest.raises(SandboxUnavailable):
            score([item(problems[0], canonical(problems[0]))])
    finally:
        monkeypatch.undo()
        for cached in (getattr(sandbox, "_tools", None), getattr(sandbox, "_base_command", None)):
            if cached is not None:
                cached.cache_clear()


NON_ROOT = textwrap.dedent("""
    import sys
    sys.path.insert(0, REPO)
    try:
        from collabloop.sandbox import SandboxLimits, run_python, run_tests
    except (ImportError, OSError):
        sys.exit("UNREADABLE: nobody cannot read the repository")
    limits = SandboxLimits(timeout_s=5)
    tests = "def check(c):\\n    assert c(2) == 3\\n    assert c(0) == 1\\n"
    good = run_tests("def f(x):\\n    return x + 1\\n", tests, "f", limits=limits)
    rigged = run_tests("class I(int):\\n    __eq__ = lambda s, o: True\\ndef f(x):\\n    return I(0)\\n", tests, "f",
                       limits=limits)
    exits = run_tests("import os\\nos._exit(0)\\n", tests, "f", limits=limits)
    seen = run_python("import os\\nprint(os.path.exists('/etc/passwd'), os.path.exists('/work'))", limits)
    print(good.status, rigged.status, exits.status, seen.stdout.strip(), good.stderr[-300:])
""")


def test_the_non_root_path_still_refuses_fakes():
    if os.geteuid() != 0:
        pytest.skip("this test drops from root to nobody")
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if subprocess.run([*nobody, "unshare", "--user", "--map-root-user", "true"], capture_output=True).returncode:
        pytest.skip("user namespaces are refused to unprivileged users here")
    program = NON_ROOT.replace("REPO", repr(str(REPO)))
    result = subprocess.run([*nobody, sandbox.sandbox_python(), "-I", "-B", "-c", program], capture_output=True,
                            text=True, timeout=60, cwd="/", env={"PATH": "/usr/bin:/bin"})
    if "UNREADABLE" in result.stderr:
        pytest.skip("the repository is not readable by nobody here")
    assert result.stdout.split()[:5] == ["pass", "fail", "fail", "False", "False"], result.stdout + result.stderr
