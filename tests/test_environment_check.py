"""An environment setup.sh did not install (a node without a registry): which pins it meets, said exactly."""

from __future__ import annotations

import subprocess
import sys

from collabloop.environment_check import API_PACKAGES, differences, pins
from tests.conftest import REPO


def test_this_environment_fits_its_own_pins():
    checked = subprocess.run([sys.executable, "collabloop/environment_check.py", "cpu"], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "fits the pins collabloop needs" in checked.stdout


def test_what_does_not_fit_is_named_with_its_pin(tmp_path):
    (tmp_path / "common.txt").write_text("# pins\ntrl==1.16.0\ntqdm==4.70.1\npeft==0.21.2\n")
    (tmp_path / "gpu.txt").write_text("vllm==0.31.0\n")
    assert pins(tmp_path, "gpu")["trl"] == ("1.16.0", f"{tmp_path}/common.txt:2")
    # A GPU node as ../shared/research/gpu.md describes one: torch, transformers, accelerate, peft; no vLLM or
    # TRL; a tqdm of another release.
    node = {"peft": "0.21.2", "tqdm": "4.67.1", "torch": "2.11.0+cu130"}
    blocking, allowed = differences(tmp_path, "gpu", version_of=node.get)
    assert blocking == [f"trl: not installed, 1.16.0 pinned ({tmp_path}/common.txt:2)",
                        f"vllm: not installed, 0.31.0 pinned ({tmp_path}/gpu.txt:1)"]
    assert allowed == [f"tqdm: 4.67.1 installed, 4.70.1 pinned ({tmp_path}/common.txt:3)"]
    # A local build's suffix is the same release.
    assert differences(tmp_path, "gpu", version_of={"trl": "1.16.0", "tqdm": "4.70.1", "peft": "0.21.2+local",
                                                     "vllm": "0.31.0"}.get) == ([], [])


def test_the_packages_whose_api_is_called_are_all_pinned():
    pinned = {**pins(REPO / "requirements", "gpu"), **pins(REPO / "requirements", "cpu")}
    assert set(API_PACKAGES) <= set(pinned)
