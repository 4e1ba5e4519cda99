"""`loop estimate`: the calls a config will make and what they cost, before the run."""

from __future__ import annotations

import pytest

from collabloop.estimate import estimate, render
from tests.conftest import REPO


def uses(result: dict, iteration: int, stage: str) -> dict:
    found = [s for it in result["iterations"] if it["iteration"] == iteration for s in it["stages"]
             if s.stage == stage]
    assert len(found) == 1, (iteration, stage)
    return found[0].uses


def test_the_arithmetic_demo_config_makes_these_calls_and_costs_nothing(tmp_path):
    """48 training tasks, K=6, S=2, w=2; 48 held-out tasks x 3 conversations of 3 turns; local models."""
    result = estimate(str(REPO / "configs" / "arithmetic.yaml"), run_dir=str(tmp_path / "no_run"))
    generate, simulate, annotate = (uses(result, 1, s) for s in ("generate", "simulate", "annotate"))
    assert generate["policy"].calls == 48 * 6
    assert simulate["simulator"].calls == 48 * 6 * 2 * 2 and simulate["policy"].calls == 48 * 6 * 2 * 2
    assert annotate["judge"].calls == 48 * 6 * 2  # interactivity, once per future
    assert uses(result, 2, "generate")["policy"].calls == 2 * 48 * 6  # and the continued conversations
    for i in (0, 1, 2):
        evaluate = uses(result, i, "evaluate")
        assert evaluate["policy"].calls == 48 * 3 * 3 and evaluate["simulator"].calls == 48 * 3 * 2
        assert evaluate["judge"].calls == 0  # metrics [accuracy, token_amount]: no judge
    text = render(result)
    assert "total cost: $0.0000" in text and "| local |" in text and "$0." not in text.split("total cost")[0]


def test_a_recipe_is_priced_from_litellms_table(monkeypatch):
    """collabllm_docs.yaml with gpt-4o-mini as simulator and judge: the cost is the tokens of each role
    times litellm's own prices (offline), and the policy's local engine costs nothing."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    result = estimate(str(REPO / "configs" / "collabllm_docs.yaml"))
    assert result["tasks"].assumed and result["tasks"].count == 500  # the placeholder path is not here
    simulate = uses(result, 1, "simulate")
    assert simulate["simulator"].calls == 500 * 2 * 3 * 2  # K=2, S=3, w=2
    assert simulate["simulator"].completion_tokens == simulate["simulator"].calls * 512
    prices = litellm.model_cost["gpt-4o-mini"]
    expected = 0.0
    for it in result["iterations"]:
        for stage in it["stages"]:
            for role in ("simulator", "judge"):
                use = stage.uses[role]
                expected += (use.prompt_tokens * prices["input_cost_per_token"]
                             + use.completion_tokens * prices["output_cost_per_token"])
    text = render(result)
    total = float(text.split("total cost: $")[1].split()[0].replace(",", ""))
    assert total == pytest.approx(expected, rel=1e-3) and total > 1
    assert "CollabLLM's Table 7" in text and "one candidate with one simulated future of w=2" in text


def test_tasks_per_iteration_prices_each_iteration_on_its_slice(tmp_path):
    recipe = (REPO / "configs" / "collabllm_math.yaml").read_text()
    config = tmp_path / "online.yaml"
    config.write_text(recipe.replace("contexts:\n", "contexts:\n  tasks_per_iteration: 64\n", 1)
                      .replace("  num_iterations: 1 ", "  num_iterations: 8 ", 1))
    result = estimate(str(config))
    assert len(result["iterations"]) == 9 and result["tasks"].count == 64
    assert uses(result, 1, "generate")["policy"].calls == 64 * 2  # K=2 on this iteration's 64 openings
