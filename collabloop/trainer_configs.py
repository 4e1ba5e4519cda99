"""The trainers' own arguments, beside the TRL config class each uses (the `dpo:`, `kto:`, ..., `sft:`,
`reward:` and `grpo:` sections also take any field of it), and the SFT data builder's config."""

from __future__ import annotations

import math
from dataclasses import dataclass

from collabloop.config_error import ConfigError, at_least
from collabloop.stage_configs import (
    DEFAULT_METRIC_WEIGHTS,
    EMBEDDED_MODEL,
    SERVED_MODEL,
    SERVER_API_BASE,
    JudgeArgs,
    RemoteCallArgs,
    SimulatorArgs,
    _help,
)


@dataclass
class LoraArgs:
    """LoRA (PEFT) for any trainer: off by default (full fine-tuning suits small models)."""

    use_peft: bool = _help(
        "Train LoRA adapters instead of all weights (as CollabLLM trains its 8B model).",
        default=False,
    )
    lora_r: int = _help("LoRA rank.", default=16)
    lora_alpha: int = _help("LoRA scaling numerator (the update is scaled by lora_alpha / lora_r).", default=32)
    lora_dropout: float = _help("Dropout on the LoRA branch.", default=0.05)
    lora_target_modules: list[str] = _help(
        "Modules that get adapters; ['all-linear'] targets every linear layer but the output head.",
        default_factory=lambda: ["all-linear"],
    )

    def _check_lora(self) -> None:
        at_least(self, 1, "lora_r")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")

    def peft_config(self, task_type: str = "CAUSAL_LM"):
        """The PEFT LoraConfig, or None for full fine-tuning."""
        if not self.use_peft:
            return None
        from peft import LoraConfig

        targets = self.lora_target_modules
        return LoraConfig(
            r=self.lora_r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout, task_type=task_type,
            target_modules=targets[0] if targets == ["all-linear"] else targets,
        )


@dataclass
class PreferenceArgs(LoraArgs):
    """The preference stage's own arguments; the TRL config's fields sit beside them in the same section."""

    pairs_path: str = _help("Preference pairs (JSONL).", default="pairs.jsonl")
    rewards_path: str = _help("Scored candidates (JSONL); KTO reads them when kto_source is 'rewards'.", default="")
    model_name_or_path: str = _help(
        "Model to train (the previous iteration's).",
        default=EMBEDDED_MODEL,
    )
    ref_model: str = _help(
        "Reference model of DPO/KTO; empty: the model being trained. The loop passes the initial model "
        "(loop.reference: previous passes the previous iteration's).",
        default="",
    )
    rpo_alpha: float | None = _help(
        "DPO only: add rpo_alpha x the SFT loss on chosen replies (ms-swift's name). Becomes TRL's "
        "loss_type [..., sft] with loss_weights [1, ..., rpo_alpha]; null: off.",
        default=None,
    )
    kto_source: str = _help(
        "KTO only: 'pairs' (chosen desirable, rejected undesirable) or 'rewards' (every scored candidate: above "
        "its context's mean reward desirable, below undesirable, equal dropped).",
        default="pairs",
    )

    def __post_init__(self):
        self._check_lora()
        if self.kto_source not in ("pairs", "rewards"):
            raise ConfigError(f"kto_source must be 'pairs' or 'rewards', got {self.kto_source!r}")
        if self.rpo_alpha is not None and (not math.isfinite(self.rpo_alpha) or self.rpo_alpha < 0):
            raise ConfigError(f"rpo_alpha must be >= 0 or null, got {self.rpo_alpha}")


@dataclass
class SFTArgs(LoraArgs):
    """The SFT stage's own arguments; TRL's SFTConfig fields sit beside them in the `sft:` section."""

    sft_path: str = _help(
        "Conversations to imitate (JSONL of {id, messages}, ending with an assistant turn).",
        default="sft.jsonl",
    )
    model_name_or_path: str = _help("Model to fine-tune.", default=EMBEDDED_MODEL)

    def __post_init__(self):
        self._check_lora()


@dataclass
class SFTDataConfig:
    """The SFT recipe: the best-scored conversations of a run become SFT examples."""

    rewards_paths: list[str] = _help(
        "Scored candidates (JSONL), e.g. every iteration's rewards.jsonl of a run.",
        default_factory=list,
    )
    output_path: str = _help("Where to write the SFT examples (JSONL).", default="sft.jsonl")
    min_reward: float | None = _help(
        "Keep a context's best candidate only when its reward is at least this; null: always.",
        default=None,
    )
    include_future: bool = _help(
        "Also keep the best candidate's first simulated future, cut after its last assistant turn (a multi-turn "
        "example); false: the context and the best candidate only.",
        default=False,
    )

    def __post_init__(self):
        if not self.rewards_paths:
            raise ConfigError("rewards_paths is empty; name at least one rewards.jsonl")


@dataclass
class RewardModelArgs(LoraArgs):
    """The reward-model stage's own arguments; TRL's RewardConfig fields sit beside them in the `reward:` section."""

    pairs_path: str = _help("Preference pairs (JSONL) to learn from.", default="pairs.jsonl")
    model_name_or_path: str = _help(
        "Model to start from; a one-label score head is added.",
        default=EMBEDDED_MODEL,
    )
    use_margin: bool = _help(
        "Train with each pair's reward gap as the margin: loss -log sigmoid(r_chosen - r_rejected - margin).",
        default=False,
    )

    def __post_init__(self):
        self._check_lora()


@dataclass
class GRPOArgs(LoraArgs, SimulatorArgs, JudgeArgs, RemoteCallArgs):
    """Online GRPO: each sampled reply is rewarded by simulated futures and the metrics (the `grpo:` section
    also takes any field of TRL's GRPOConfig: num_generations, max_completion_length, beta, ...)."""

    contexts_path: str = _help("Contexts whose prompts the policy answers (JSONL).", default="contexts.jsonl")
    tasks_path: str = _help(
        "Task set holding each context's hidden goal and reference (JSONL).",
        default="data/tasks/math_demo_train.jsonl",
    )
    model_name_or_path: str = _help(
        "Model to train (the previous iteration's).",
        default=EMBEDDED_MODEL,
    )
    metric_weights: dict[str, float] = _help(
        "Metric name -> weight in the multiturn-aware reward of a sampled reply.",
        default_factory=lambda: dict(DEFAULT_METRIC_WEIGHTS),
    )
    term_cap: float = _help("Each weighted metric term is clipped to [-term_cap, term_cap].", default=1.0)
    num_futures: int = _help("S: simulated futures per sampled reply.", default=1)
    window_turns: int = _help(
        "w: user/assistant exchanges simulated after the reply (0: score the reply alone).",
        default=1,
    )
    assistant_model: str = _help(
        "litellm model that plays the assistant in the futures (the trained policy is not served while it "
        "trains; CollabLLM's verl recipe makes the same substitution).",
        default=SERVED_MODEL,
    )
    assistant_api_base: str | None = _help(
        "Base URL of the assistant model's server; null for API models.",
        default=SERVER_API_BASE,
    )
    assistant_max_tokens: int = _help("Most tokens in one simulated assistant turn.", default=128)

    def __post_init__(self):
        self._check_lora()
        self._check_remote()
        self._check_simulator()
        if not self.metric_weights:
            raise ConfigError("metric_weights is empty; name at least one metric")
        self._check_judge(self.metric_weights)
        at_least(self, 1, "num_futures")
        at_least(self, 0, "window_turns")
