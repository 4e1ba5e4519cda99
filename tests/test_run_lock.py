"""One owner per run folder: a second run_loop.sh, or a stage run by hand, on a busy folder stops at once and
names the owner; a killed run's folder is taken over by the next run without cleanup."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from collabloop.run_lock import OWNER, RunBusy, hold, take
from tests.conftest import MODEL, PYTHON, REPO


def test_a_second_holder_is_refused_with_the_owners_name_and_a_dead_owner_is_taken_over(tmp_path):
    """The lock itself, between processes: a live owner refuses; once it is killed (no cleanup), the next
    owner takes over and says whose lock it was."""
    run_dir = tmp_path / "run"
    owner = subprocess.Popen(
        [PYTHON, "-c", "import sys, time; from collabloop.run_lock import hold; hold(sys.argv[1], 'sleeper'); "
         "print('held', flush=True); time.sleep(600)", str(run_dir)],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert owner.stdout.readline().strip() == "held"
        recorded = json.loads((run_dir / OWNER).read_text())
        assert recorded["pid"] == owner.pid and recorded["command"] == "sleeper"
        fd = os.open(run_dir / "run.lock", os.O_RDWR)
        with pytest.raises(RunBusy, match=rf"{run_dir} is in use by pid {owner.pid} on .* \(sleeper\)\. A run folder "
                                          rf"has one owner: .* stop it \(kill {owner.pid}\), or use another --run_dir"):
            take(run_dir, fd, os.getpid(), "second")
        assert json.loads((run_dir / OWNER).read_text()) == recorded  # the refused one changed nothing
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    # Killed: the kernel let the lock go; its name is still there, and the next owner says it took over.
    line = take(run_dir, fd, os.getpid(), "third")
    assert line == f"{run_dir}: took over the lock of pid {owner.pid} on {recorded['host']} since " \
                   f"{recorded['since']} (sleeper), which is no longer running"
    assert json.loads((run_dir / OWNER).read_text())["pid"] == os.getpid()
    os.close(fd)


def test_a_stage_under_its_owners_lock_takes_nothing(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    monkeypatch.setenv("COLLABLOOP_RUN_OWNER", str(run_dir.resolve()))
    assert hold(run_dir, "a stage of run_loop.sh") is None
    assert not run_dir.exists()  # no lock file, no owner file: the parent holds them


@pytest.mark.timeout(900)
def test_run_loop_owns_its_folder(tmp_path):
    """A second run_loop.sh, and a stage run by hand, on a busy folder exit 1 within seconds naming the
    owner's pid; after the first is killed mid-stage, the same command takes the folder over and finishes."""
    tasks = tmp_path / "tasks.jsonl"
    lines = (REPO / "data" / "tasks" / "collab_heldout.jsonl").read_text().splitlines()[:8]  # the first run outlasts
    # the two refused ones (engine start and 24 conversations) by a wide margin
    tasks.write_text("\n".join(lines) + "\n")
    run_dir = tmp_path / "run"
    command = ["bash", "run_loop.sh", "configs/demo.yaml", "--num_iterations", "0", "--initial_model", str(MODEL),
               "--eval_tasks", str(tasks), "--run_dir", str(run_dir)]
    first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    try:
        deadline = time.time() + 300
        while not (run_dir / "iter_0").exists():  # the lock is taken before any stage starts
            assert first.poll() is None and time.time() < deadline, first.stdout.read()
            time.sleep(0.2)
        for refused in (command, [PYTHON, "-m", "collabloop.driver", "run", "evaluate", "--run_dir", str(run_dir),
                                  "--iteration", "0"]):
            started = time.time()
            second = subprocess.run(refused, cwd=REPO, capture_output=True, text=True, timeout=120)
            assert second.returncode == 1, second.stdout + second.stderr
            assert f"is in use by pid {first.pid} on" in second.stderr, second.stderr
            assert time.time() - started < 60
        assert first.poll() is None  # the owner runs on, untouched
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the whole run, mid-stage, as a cluster's requeue would
        first.wait()
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=840)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"took over the lock of pid {first.pid} on" in again.stdout
    assert not (run_dir / OWNER).exists()  # a run that ends removes its name
