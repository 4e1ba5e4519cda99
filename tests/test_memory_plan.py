"""GPU memory plans, worked out on a CPU: what a model needs, and whether a stage's engines share a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from collabloop.config import parse_config
from collabloop.config_error import ConfigError
from collabloop.loop import run_plan
from collabloop.loop_config import LoopConfig
from collabloop.memory_plan import (
    Engine,
    context_length,
    kv_bytes_per_token,
    parameter_count,
    plan_engines,
    stage_engines,
)
from collabloop.stage_configs import EvaluateConfig, SimulateConfig
from tests.conftest import REPO

LLAMA_8B = "tests/data/model_configs/Llama-3.1-8B-Instruct"  # its config.json alone: no weights travel


def test_what_a_model_needs_from_its_config_and_weights(model_dir):
    # The embedded model: counted from its safetensors headers; the estimate from its config (no norms) is
    # within a tenth of a percent of it, which is what a plan made away from the weights relies on.
    counted = parameter_count(str(model_dir))
    assert counted == 134_515_008
    assert abs(parameter_count(LLAMA_8B) - 8.03e9) / 8.03e9 < 0.01
    assert context_length(str(model_dir)) == 8192 and context_length(LLAMA_8B) == 131072
    assert kv_bytes_per_token(LLAMA_8B, "bfloat16") == 2 * 32 * 8 * 128 * 2  # K and V, 32 layers, 8 KV heads
    assert kv_bytes_per_token(str(model_dir), "float32") == 2 * 30 * 3 * 64 * 4
    with pytest.raises(ConfigError, match="models/Llama-3.1-8B-Instruct/config.json does not exist: is"):
        context_length("models/Llama-3.1-8B-Instruct")


def test_the_embedded_models_estimate_is_close_to_its_count(model_dir, tmp_path):
    (tmp_path / "config.json").write_text((Path(model_dir) / "config.json").read_text())
    estimate = parameter_count(str(tmp_path))
    assert estimate != 134_515_008 and abs(estimate - 134_515_008) / 134_515_008 < 0.001


def test_engines_that_share_a_gpu_are_planned_together():
    policy = Engine("policy", LLAMA_8B, 0.6, 16384)
    simulator = Engine("local simulator", LLAMA_8B, 0.3, 16384)
    plans = plan_engines([policy, simulator], 80, "a recipe")
    assert [round(p.weights_gib, 1) for p in plans] == [15.0, 15.0]
    assert [p.kv_tokens for p in plans] == [254_304, 57_696]
    # A server of vLLM's default share beside them: refused before anything loads, naming every share.
    server = Engine("server", LLAMA_8B, 0.3, 4096)
    with pytest.raises(ConfigError, match=r"policy 0.6 \+ local simulator 0.3 \+ server 0.3 = 1.20 of it"):
        plan_engines([policy, simulator, server], 80, "stage simulate")
    # On a 40 GiB GPU the simulator's share cannot hold its weights and one sequence: the message says what fits.
    with pytest.raises(ConfigError, match=r"local simulator engine .* gets 0.3 of 40 GiB = 12.0 GiB.*raise its share"):
        plan_engines([Engine("policy", LLAMA_8B, 0.6, 8192), simulator], 40, "a recipe")
    # max_model_len 0 is the model's own: 131072 tokens need 16 GiB of KV cache, more than 0.3 of 80 leaves.
    with pytest.raises(ConfigError, match=r"fewer than one sequence of max_model_len 131,072; .* at most 57,344"):
        plan_engines([Engine("local judge", LLAMA_8B, 0.3, 0)], 80, "annotate")


def test_a_stages_engines(model_dir):
    # The policy's own model as simulator: one engine (the policy's); a trained policy beside it: two.
    same = SimulateConfig(model=str(model_dir), simulator_model=f"local/{model_dir}")
    assert [e.role for e in stage_engines(same)] == ["policy"]
    assert [e.role for e in stage_engines(same, trained_policy=True)] == ["policy", "local simulator"]
    # The run's server, which lives across stages on the first GPU, is counted in every stage beside it.
    served = LoopConfig(simulator_backend="server")
    evaluate = EvaluateConfig(model=str(model_dir), judge_model="hosted_vllm/simulator")
    assert [(e.role, e.share) for e in stage_engines(evaluate, served)] == [("policy", 0.6), ("server", 0.3)]


def test_the_plans_of_the_recipes(tmp_path):
    # The local recipe, with the 8B model's config where its weights would be: every stage fits on 80 GiB.
    local = (REPO / "configs" / "collabllm_math_local.yaml").read_text()
    recipe = tmp_path / "local.yaml"
    recipe.write_text(local.replace("models/Llama-3.1-8B-Instruct", LLAMA_8B))
    lines = run_plan(str(recipe), 80)
    assert "  evaluate:" in lines and sum("local simulator" in line for line in lines) == 3
    # The plan written in the recipe is the one computed.
    for line in lines:
        if line.startswith("    policy") or line.startswith("    local simulator"):
            tokens = line.split(" = ")[1].split(" tokens")[0]
            assert tokens in local, line
    # The API recipes start only the policy's engine.
    for name in ("collabllm_math", "collabllm_code", "collabllm_docs"):
        text = (REPO / "configs" / f"{name}.yaml").read_text()
        api = tmp_path / f"{name}.yaml"
        initial = parse_config(LoopConfig, "loop", ["--config", str(REPO / "configs" / f"{name}.yaml")]).initial_model
        api.write_text(text.replace(initial, LLAMA_8B))
        engines = [line.split()[0] for line in run_plan(str(api), 80)[1:] if not line.endswith(":")]
        assert set(engines) == {"policy"}, name
