"""Who plays each model role besides the policy, named once for every stage: the user simulator, the judge,
and the assistant of GRPO's simulated futures.

A stage's `<role>_model` and `<role>_api_base` come from, lowest first (`collabloop.config.run_defaults`):
the stage config's defaults; the run's local model (`loop.simulator_model_path`: 'local/<path>', a vLLM
engine in the stage's process, or the run's vLLM server), where the YAML has a `loop:` section; the
`roles:` section; the stage's own section; the command line. The run's budget (`loop.max_cost_usd`)
reaches every stage the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from collabloop.config_error import ConfigError
from collabloop.stage_configs import _help

ROLES = ("simulator", "judge", "assistant")


@dataclass
class RolesConfig:
    """The models every stage calls in each role; a stage's own section may still name another."""

    simulator_model: str = _help(
        "The user simulator of every stage (contexts, simulate, evaluate, grpo): a litellm model name (e.g. "
        "'gpt-4o-mini', 'hosted_vllm/<name>' at simulator_api_base) or 'local/<model dir>'; empty: the run's "
        "local model (loop.simulator_model_path), else each stage's own setting.",
        default="",
    )
    simulator_api_base: str | None = _help(
        "OpenAI-compatible base URL of the simulator's server; null: litellm's endpoint for an API model.",
        default=None,
    )
    judge_model: str = _help(
        "The LLM judge of every stage that grades (annotate, evaluate, grpo); empty: as simulator_model says.",
        default="",
    )
    judge_api_base: str | None = _help("Base URL of the judge's server; null for API models.", default=None)
    assistant_model: str = _help(
        "The model that plays the assistant in GRPO's simulated futures (the policy is not served while it "
        "trains); empty: as simulator_model says.",
        default="",
    )
    assistant_api_base: str | None = _help("Base URL of the assistant's server; null for API models.",
                                            default=None)

    def __post_init__(self):
        for role in ROLES:
            if getattr(self, f"{role}_api_base") and not getattr(self, f"{role}_model"):
                raise ConfigError(f"roles.{role}_api_base is set but roles.{role}_model is not; name the model "
                                  f"its server serves (e.g. hosted_vllm/<name>)")
