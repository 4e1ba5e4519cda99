"""The in-process simulator/judge backend (`local/<model dir>`): one engine batch per call, the cache,
failure accounting, logprob judging, and one engine shared with the policy on the same model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from collabloop.llm_client import client_for
from collabloop.response_cache import ResponseCache
from collabloop.stage_configs import EvaluateConfig

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def backend(model_dir, work, mode: str) -> dict:
    result = subprocess.run([sys.executable, "tests/local_backend.py", str(model_dir), str(work), mode],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@pytest.mark.slow
def test_local_backend_batches_caches_judges_and_shares_the_policy_engine(model_dir, tmp_path):
    out = backend(model_dir, tmp_path, "first")
    first = out["first"]
    # 6 distinct turns, one of them asked twice, and one prompt too long for local_max_model_len=512.
    assert first["stats"]["calls"] == 7 and first["stats"]["deduplicated"] == 1
    assert first["batches"] == 1 and first["engine_starts"] == 1  # every miss in one engine batch
    assert first["api_base"] is None  # no server: the address is not part of the cache key
    texts, errors = first["texts"], first["errors"]
    assert all(isinstance(t, str) and t.strip() for t in texts[:7]) and errors[:7] == [None] * 7
    assert texts[6] == texts[0]  # the repeated request is the same call
    assert len(set(texts[:6])) > 1  # sampled, with distinct salts
    assert texts[7] is None and "does not fit max_model_len=512" in errors[7]
    assert first["stats"]["failures"] == 1
    assert out["fresh_texts"] == texts  # the same batch sampled again, without the cache: the same text

    judge = out["judge"]
    assert judge["errors"] == [None, None]
    assert all(0.0 <= v <= 1.0 for v in judge["values"])
    # The engine returned the first token's 10 most likely alternatives; the grade is their expectation over
    # A/B/C, or the letter written where they hold under half the mass.
    assert judge["cached"] == [True, True] and judge["alternatives"] == [10, 10]
    assert judge["values"] == [e if e is not None else letter
                               for e, letter in zip(judge["expected_from_logprobs"], judge["letters"])]
    assert len(judge["first_token_logprobs"]) >= 2 and all(v <= 0 for v in judge["first_token_logprobs"].values())

    assert out["engines"] == 1  # the policy sampled from the simulator's engine: the same model
    assert out["policy_reply"].strip()
    assert out["policy_max_model_len"] == 512  # the shared engine's, set by its first user
    too_long, fits = out["too_long_replies"]
    assert too_long is None and fits[0].strip()
    ended = out["too_long_future"]
    assert ended["too_long"] and ended["error"] is None and ended["counted"] == 1
    assert [m["role"] for m in ended["future"]] == ["user"]  # the simulated user's turn, then no reply

    rerun = backend(model_dir, tmp_path, "rerun")
    assert rerun["texts"] == texts[:7] and rerun["errors"] == [None] * 7 and rerun["cached"] == [True] * 7
    assert rerun["stats"] == {"cache_hits": 6, "deduplicated": 1}  # no call made
    assert rerun["engine_starts"] == 0 and rerun["vllm_imported"] is False


def test_local_model_names_no_server(tmp_path):
    cfg = EvaluateConfig()
    cache = ResponseCache(tmp_path / "c.sqlite")
    local = client_for(cfg, cache, model="local/models/x", api_base="http://127.0.0.1:8000/v1", temperature=1.0,
                       max_tokens=8)
    remote = client_for(cfg, cache, model="hosted_vllm/simulator", api_base="http://127.0.0.1:8000/v1",
                        temperature=1.0, max_tokens=8)
    assert local.local is not None and local.local.path == "models/x" and local.endpoint.api_base is None
    assert remote.local is None and remote.endpoint.api_base == "http://127.0.0.1:8000/v1"
