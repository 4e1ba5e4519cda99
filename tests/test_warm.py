"""tests/warm.py runs a script as a fresh `python SCRIPT` would: the same argv, folder, environment,
sys.path[0], __name__, output and exit status, and a SIGKILL ends it with -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from tests import warm
from tests.conftest import PYTHON

pytestmark = pytest.mark.slow

SCRIPT = """
import json, os, sys
print(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "path0": sys.path[0], "name": __name__,
                  "env": os.environ.get("WARM_PROBE"), "collabloop_loaded": "collabloop" in sys.modules}))
print("to stderr", file=sys.stderr)
if sys.argv[1] == "exit":
    sys.exit(3)
if sys.argv[1] == "raise":
    raise ValueError("raised on purpose")
if sys.argv[1] == "sleep":
    import time
    open(sys.argv[2], "w").close()
    time.sleep(60)
"""


def test_a_script_runs_as_under_a_fresh_interpreter(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "WARM_PROBE": "yes"}
    for mode, code in (("exit", 3), ("raise", 1), ("end", 0)):
        argv = [PYTHON, str(script), mode, "two words"]
        fresh = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        forked = warm.run(argv, cwd=tmp_path, env=env, timeout=60)
        assert forked.returncode == fresh.returncode == code, (mode, forked.stderr[-2000:])
        assert json.loads(forked.stdout.splitlines()[0]) == json.loads(fresh.stdout.splitlines()[0])
        assert forked.stderr.splitlines()[0] == "to stderr"
        assert ("ValueError: raised on purpose" in forked.stderr) == (mode == "raise")

    started = tmp_path / "started"
    process = warm.start([PYTHON, str(script), "sleep", str(started)], cwd=tmp_path)
    deadline = time.time() + 60
    while not started.exists() and time.time() < deadline:
        time.sleep(0.02)
    assert process.poll() is None
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(30) == -signal.SIGKILL
