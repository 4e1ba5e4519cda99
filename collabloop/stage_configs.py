"""One config dataclass per stage. Every field is typed, has a default and a help text.

A run YAML has one section per stage, named as in `collabloop.pipeline.SECTIONS`,
plus `loop:` for the driver (`LoopConfig`, collabloop/loop_config.py), `roles:` for the
models every stage calls (collabloop/roles.py) and one per trainer
(collabloop/trainer_configs.py). `python -m collabloop.loop check --config run.yaml`
parses every section before anything runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from collabloop.collaboration import COLLABORATIVE_SYSTEM_PROMPT
from collabloop.config_error import ConfigError, _help, at_least
from collabloop.llm_client import DEFAULT_TIMEOUT_S
from collabloop.schedule_configs import RateLimitArgs, ScheduleArgs
from collabloop.stats import BOOTSTRAP_RESAMPLES

# The embedded model (setup.sh makes it), and where the run's own vLLM server serves a local model.
EMBEDDED_MODEL = "models/SmolLM2-135M-Instruct"
SERVED_NAME = "simulator"
SERVER_PORT = 8000
SERVED_MODEL = f"hosted_vllm/{SERVED_NAME}"
SERVER_API_BASE = f"http://127.0.0.1:{SERVER_PORT}/v1"


# CollabLLM's multiturn-aware reward: the task metric, the judge's interactivity grade, and a cost per token
# (the annotate stage's and GRPO's default; a run's YAML names its own).
DEFAULT_METRIC_WEIGHTS = {"accuracy": 1.0, "interactivity": 1.0, "token_amount": -1e-4}


@dataclass
class SimulatorArgs:
    simulator_model: str = _help(
        "The user simulator: a litellm model name, e.g. 'hosted_vllm/simulator' (a vLLM server at "
        "simulator_api_base) or 'gpt-4o-mini'; or 'local/<model dir>': a vLLM engine in the stage process, no "
        "server (the api_base is then not used).",
        default=SERVED_MODEL,
    )
    simulator_api_base: str | None = _help(
        "OpenAI-compatible base URL of the simulator server; empty/null for API models.",
        default=SERVER_API_BASE,
    )
    simulator_temperature: float = _help("Sampling temperature of the user simulator.", default=1.0)
    simulator_max_tokens: int = _help("Most tokens in one simulated user turn.", default=96)
    simulator_format: str = _help(
        "'json': the simulator answers {thought, message} (hidden reasoning, as CollabLLM); 'text': the message "
        "alone. Replies that break the format fall back to their text and are counted.",
        default="json",
    )
    end_on_answer: bool = _help(
        "End a conversation as soon as an assistant turn states a final answer the task's metric reads (math: a "
        "number): the user takes the first answer. A small simulator seldom ends a conversation itself, and the "
        "turns it adds after an answer lead the policy to state other numbers, so the score measured the "
        "simulator more than the policy.",
        default=False,
    )

    def _check_simulator(self) -> None:
        from collabloop.simulator import FORMATS

        if self.simulator_format not in FORMATS:
            raise ConfigError(f"simulator_format must be one of {list(FORMATS)}, got {self.simulator_format!r}")


def _check_budget(max_cost_usd: float | None) -> None:
    if max_cost_usd is not None and not max_cost_usd > 0:
        raise ConfigError(f"max_cost_usd must be > 0 dollars or null (no budget), got {max_cost_usd}")


@dataclass
class RemoteCallArgs(RateLimitArgs):
    llm_max_concurrency: int = _help(
        "Most simulator/judge calls in flight at once (a local vLLM server batches them; lower it for "
        "rate-limited APIs).",
        default=64,
    )
    llm_timeout_s: float = _help(
        "Seconds before one simulator/judge call is abandoned (then retried). The time spent queued at the server "
        "counts: on a 2-core CPU a local server took over 120 s for a wave of 64 calls.",
        default=DEFAULT_TIMEOUT_S,
    )
    llm_max_retries: int = _help("Retries of a failed call (exponential backoff, capped at 4 s).", default=3)
    llm_cache_path: str = _help(
        "SQLite file caching simulator/judge responses by request; empty: 'llm_cache.sqlite' beside the output.",
        default="",
    )
    max_failure_fraction: float = _help(
        "The stage fails when more than this fraction of simulator/judge results failed.", default=0.2
    )
    local_max_model_len: int = _help(
        "Context length in tokens of a 'local/<model dir>' simulator or judge engine.", default=2048
    )
    max_cost_usd: float | None = _help(
        "Budget in US dollars of the run's simulator/judge calls, as litellm prices them (local engines and "
        "unpriced servers cost 0): the spend is kept in llm_cache_path, so it counts every stage and rerun that "
        "shares the cache. A call that could pass it (spent + the dearest call so far) stops the stage; finished "
        "records are kept, and a rerun with a higher budget resumes. Null: no budget.",
        default=None,
    )
    local_gpu_memory_utilization: float = _help(
        "Share of the GPU's memory a 'local/<model dir>' simulator or judge engine takes beside the policy's "
        "(gpu_memory_utilization); a local model that is the policy's own uses the policy's engine. Ignored on CPU.",
        default=0.3,
    )

    def _check_remote(self) -> None:
        at_least(self, 1, "llm_max_concurrency")
        self._check_rate_limits()
        if self.llm_timeout_s <= 0:
            raise ConfigError(f"llm_timeout_s must be > 0, got {self.llm_timeout_s}")
        at_least(self, 0, "llm_max_retries")
        if not 0.0 <= self.max_failure_fraction <= 1.0:
            raise ConfigError(f"max_failure_fraction must be in [0, 1], got {self.max_failure_fraction}")
        _check_budget(self.max_cost_usd)
        at_least(self, 16, "local_max_model_len")
        if not 0 < self.local_gpu_memory_utilization < 1:
            raise ConfigError(
                f"local_gpu_memory_utilization must be in (0, 1), got {self.local_gpu_memory_utilization}"
            )


@dataclass
class PolicyArgs:
    model: str = _help(
        "Policy model directory (the current iteration's checkpoint).",
        default=EMBEDDED_MODEL,
    )
    temperature: float = _help("Policy sampling temperature.", default=0.8)
    top_p: float = _help("Policy nucleus sampling threshold.", default=1.0)
    max_new_tokens: int = _help("Most tokens in one policy reply.", default=128)
    seed: int = _help("Base seed; every engine batch derives its own seed from it.", default=0)
    dtype: str = _help("vLLM dtype: 'auto' (vLLM's choice on GPU; on CPU bfloat16 where the CPU has native bf16, "
                       "else float32), 'bfloat16', 'float16' or 'float32'.", default="auto")
    max_model_len: int = _help(
        "vLLM context length in tokens; 0: the model's own (its config.json). A conversation whose next reply "
        "would not fit (prompt + max_new_tokens) is ended there and counted, never sent.", default=0)
    kv_cache_gib: int = _help("KV cache size for vLLM on CPU (VLLM_CPU_KVCACHE_SPACE), whole GiB.", default=1)
    gpu_memory_utilization: float = _help(
        "Share of the GPU's memory the policy's vLLM engine takes; the rest leaves room for a local simulator or "
        "judge engine (local_gpu_memory_utilization). Ignored on CPU.",
        default=0.6,
    )
    enforce_eager: bool = _help(
        "Skip vLLM's torch.compile: on CPU the engine starts in ~12 s instead of ~65 s; set false for long runs.",
        default=True,
    )

    def _check_policy(self) -> None:
        at_least(self, 0, "temperature")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        at_least(self, 1, "max_new_tokens")
        at_least(self, 0, "max_model_len")
        if self.dtype not in ("auto", "bfloat16", "float16", "float32"):
            raise ConfigError(f"dtype must be auto, bfloat16, float16 or float32, got {self.dtype!r}")
        if not 0 < self.gpu_memory_utilization < 1:
            raise ConfigError(f"gpu_memory_utilization must be in (0, 1), got {self.gpu_memory_utilization}")


@dataclass
class ShardArgs:
    """Split a per-record stage over processes (one per GPU, or one per node of a cluster)."""

    num_shards: int = _help(
        "Split the stage's input into this many shards: its fixed chunks of batch_size records are dealt "
        "round-robin, so every batch (and its seed) is the one an unsharded run makes. With more than 1, this "
        "process writes <output>.shard<i>-of-<n>.jsonl; `python -m collabloop.shards merge` joins the shards.",
        default=1,
    )
    shard_index: int = _help("Which shard this process runs: 0 .. num_shards-1.", default=0)

    def _check_shard(self) -> None:
        at_least(self, 1, "num_shards")
        if not 0 <= self.shard_index < self.num_shards:
            raise ConfigError(
                f"shard_index must be in 0..{self.num_shards - 1} (num_shards={self.num_shards}), "
                f"got {self.shard_index}"
            )


@dataclass
class ContextsConfig(SimulatorArgs, RemoteCallArgs):
    """Contexts: the opening user turn of each task, from the task or written by the simulator."""

    tasks_path: str = _help("Task set (JSONL, one task a line).", default="data/tasks/math_demo_train.jsonl")
    output_path: str = _help("Where to write the contexts (JSONL).", default="contexts.jsonl")
    max_tasks: int | None = _help("Use only the first N tasks (null: all).", default=None)
    tasks_per_iteration: int | None = _help(
        "Open N tasks in each training iteration, the next N each time (iteration i takes tasks (i-1)N .. iN-1, "
        "from the start again past the end), so every iteration's pairs come from the current policy on prompts "
        "it has not trained on: many small iterations approach online DPO. Null: every task, every iteration. "
        "Iteration 0 (the held-out openings) always opens every task.",
        default=None,
    )
    iteration: int = _help("Iteration number; part of the simulator's sampling key.", default=1)
    continue_from: str = _help(
        "Rewards of the previous iteration: also continue each conversation with its best candidate and the "
        "simulated user's next turn. Empty: openings only.",
        default="",
    )
    max_turns: int = _help("Continue a conversation only while it has fewer than this many assistant turns.", default=4)

    def __post_init__(self):
        self._check_remote()
        self._check_simulator()
        at_least(self, 1, "max_turns")
        for name in ("max_tasks", "tasks_per_iteration"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1 or null, got {getattr(self, name)}")


@dataclass
class GenerateConfig(PolicyArgs, ShardArgs):
    """Generation: K candidate replies per context from the policy (vLLM offline engine)."""

    contexts_path: str = _help("Contexts to answer (JSONL).", default="contexts.jsonl")
    output_path: str = _help("Where to write the generations (JSONL).", default="generations.jsonl")
    num_candidates: int = _help("K: candidate replies per context.", default=4)
    batch_size: int = _help("Contexts per engine batch; also the unit of resumption.", default=64)
    collaborative_candidates: int = _help(
        "How many of the K candidates are sampled under collaborative_system_prompt and/or starting with "
        "collaborative_reply_opening (the last ones of each record). CollabLLM samples part of its candidates "
        "under a collaborative prompt; the pairs and the trained policy never see it. 0: none.",
        default=0,
    )
    collaborative_system_prompt: str = _help(
        "System prompt of the collaborative candidates; empty: none.", default=COLLABORATIVE_SYSTEM_PROMPT
    )
    collaborative_reply_opening: str = _help(
        "Text the collaborative candidates to an opening turn start with (the model continues it; the candidate "
        "keeps it; in a continued conversation, where the user has just answered, they start freely); empty: "
        "none. For a model too small to follow the system prompt: the embedded 135M model asked in 1 of 192 "
        "replies to underspecified problems under it.",
        default="",
    )

    def __post_init__(self):
        self._check_shard()
        self._check_policy()
        if self.num_candidates < 2:
            raise ConfigError(f"num_candidates must be >= 2 to build pairs, got {self.num_candidates}")
        if not 0 <= self.collaborative_candidates <= self.num_candidates:
            raise ConfigError(f"collaborative_candidates must be in 0..num_candidates ({self.num_candidates}), "
                              f"got {self.collaborative_candidates}")
        if self.collaborative_candidates and not (self.collaborative_system_prompt or self.collaborative_reply_opening):
            raise ConfigError("collaborative_candidates > 0 but collaborative_system_prompt and "
                              "collaborative_reply_opening are both empty; set one of them, or set 0")
        at_least(self, 1, "batch_size")


@dataclass
class SimulateConfig(PolicyArgs, SimulatorArgs, RemoteCallArgs, ScheduleArgs, ShardArgs):
    """Simulation: S futures of w exchanges after each candidate, simulator vs policy."""

    generations_path: str = _help("Generations to simulate (JSONL).", default="generations.jsonl")
    tasks_path: str = _help(
        "Task set holding each context's hidden goal (JSONL).",
        default="data/tasks/math_demo_train.jsonl",
    )
    output_path: str = _help("Where to write the simulations (JSONL).", default="simulations.jsonl")
    num_futures: int = _help("S: simulated futures per candidate.", default=2)
    window_turns: int = _help("w: user/assistant exchanges simulated after the candidate.", default=2)
    batch_size: int = _help("Generation records per batch; also the unit of resumption.", default=32)

    def __post_init__(self):
        self._check_shard()
        self._check_policy()
        self._check_remote()
        self._check_simulator()
        self._check_schedule()
        at_least(self, 1, "num_futures")
        at_least(self, 0, "window_turns")
        at_least(self, 1, "batch_size")


@dataclass
class JudgeArgs:
    """What the metrics need besides the conversation: a tokenizer, an LLM judge, a reward model."""

    tokenizer: str = _help(
        "Tokenizer that counts tokens for token_amount (the policy's).",
        default=EMBEDDED_MODEL,
    )
    judge_model: str = _help(
        "The LLM judge: a litellm model name (e.g. 'hosted_vllm/simulator' at judge_api_base, 'gpt-4o-mini'), or "
        "'local/<model dir>': a vLLM engine in the stage process.",
        default=SERVED_MODEL,
    )
    judge_api_base: str | None = _help(
        "Base URL of the judge server; null for API models.",
        default=SERVER_API_BASE,
    )
    judge_temperature: float = _help("Judge sampling temperature.", default=0.0)
    judge_max_tokens: int = _help("Most tokens in one judge answer.", default=8)
    judge_reasoning_max_tokens: int = _help(
        "Most tokens in one answer of a judge that reasons before it scores (interactivity_reasoned) or copies "
        "out a document (bleu_extracted).",
        default=512,
    )
    judge_top_logprobs: int | None = _help(
        "Ask the judge for its first token's N most likely alternatives and score the expected grade; "
        "null: use the letter it wrote (for APIs without logprobs).",
        default=10,
    )
    reward_model: str = _help(
        "Sequence-classification reward model folder for the rm_score metric (e.g. one run_rm.py trained).",
        default="",
    )
    reward_batch_size: int = _help("Conversations per reward-model forward pass (sorted by length).", default=16)
    reward_max_length: int = _help(
        "Longest conversation the reward model reads, in tokens (the end is kept).",
        default=2048,
    )
    sandbox_libraries: str = _help(
        "A folder of third-party packages (a site-packages built for the system's python3) that code tasks' tests "
        "and the code under test may import, bound read-only in the sandbox: BigCodeBench-style tasks import "
        "numpy, pandas and more. Empty: the standard library only.",
        default="",
    )

    def _check_judge(self, metric_names) -> None:
        from collabloop.metrics import METRICS, needs_reward_model

        unknown = sorted(set(metric_names) - set(METRICS))
        if unknown:
            raise ConfigError(f"unknown metrics {unknown}; registered: {sorted(METRICS)}")
        if self.judge_top_logprobs is not None and not 1 <= self.judge_top_logprobs <= 20:
            raise ConfigError(f"judge_top_logprobs must be in 1..20 or null, got {self.judge_top_logprobs}")
        if (need := needs_reward_model(metric_names)) and not self.reward_model:
            raise ConfigError(f"the metrics use {need} but reward_model is empty; set reward_model to a model folder")
        at_least(self, 1, "reward_batch_size", "judge_reasoning_max_tokens")
        if self.sandbox_libraries and not os.path.isdir(self.sandbox_libraries):
            raise ConfigError(f"sandbox_libraries {self.sandbox_libraries!r}: no such folder; give a site-packages "
                              "folder, or leave it empty for the standard library only")


@dataclass
class AnnotateConfig(JudgeArgs, RemoteCallArgs, ShardArgs):
    """Annotation: metrics per future, weighted into one multiturn-aware reward per candidate."""

    simulations_path: str = _help("Simulations to score (JSONL).", default="simulations.jsonl")
    tasks_path: str = _help("Task set holding references (JSONL).", default="data/tasks/math_demo_train.jsonl")
    output_path: str = _help("Where to write the rewards (JSONL).", default="rewards.jsonl")
    metric_weights: dict[str, float] = _help(
        "Metric name -> weight of its term in the reward; every metric named here is computed.",
        default_factory=lambda: dict(DEFAULT_METRIC_WEIGHTS),
    )
    term_cap: float = _help("Each weighted metric term is clipped to [-term_cap, term_cap].", default=1.0)
    without_futures: bool = _help(
        "Score each candidate alone, with no simulated future: `simulations_path` may then be a generations "
        "file (Online-RLHF's annotation, e.g. with rm_score).",
        default=False,
    )
    batch_size: int = _help("Simulation records per batch; also the unit of resumption.", default=32)

    def __post_init__(self):
        self._check_shard()
        self._check_remote()
        if not self.metric_weights:
            raise ConfigError("metric_weights is empty; name at least one metric, e.g. '{accuracy: 1}'")
        self._check_judge(self.metric_weights)
        if self.term_cap <= 0:
            raise ConfigError(f"term_cap must be > 0, got {self.term_cap}")
        at_least(self, 1, "batch_size")


@dataclass
class EvaluateConfig(PolicyArgs, SimulatorArgs, JudgeArgs, RemoteCallArgs, ScheduleArgs, ShardArgs):
    """Evaluation: full conversations between the policy and the simulator on held-out tasks, scored."""

    contexts_path: str = _help(
        "Opening contexts of the held-out tasks (JSONL, from make_contexts.py).",
        default="eval_contexts.jsonl",
    )
    tasks_path: str = _help(
        "Held-out task set holding goals and references (JSONL).",
        default="data/tasks/math_demo_eval.jsonl",
    )
    output_dir: str = _help("Folder for conversations.jsonl and summary.json.", default="eval")
    iteration: int = _help("Iteration the model comes from (0: the initial model); recorded in the summary.", default=0)
    max_turns: int = _help(
        "Most assistant turns in one conversation (it also ends when the user terminates).",
        default=4,
    )
    num_samples: int = _help(
        "Conversations played from each opening (ids <context id>/sample<j> when above 1): the report compares "
        "iterations per task over the same openings, and more samples per task narrow its intervals.",
        default=1,
    )
    metrics: list[str] = _help(
        "Metrics scored on each conversation; 'turns' (assistant turns) is always added.",
        default_factory=lambda: ["accuracy", "interactivity", "token_amount"],
    )
    confidence: float = _help("Level of the bootstrap confidence intervals in the summary.", default=0.95)
    bootstrap_samples: int = _help("Bootstrap resamples per interval.", default=BOOTSTRAP_RESAMPLES)
    batch_size: int = _help("Conversations per batch; also the unit of resumption.", default=64)

    def __post_init__(self):
        self._check_shard()
        self._check_policy()
        self._check_remote()
        self._check_simulator()
        self._check_schedule()
        if not self.metrics:
            raise ConfigError("metrics is empty; name at least one, e.g. [accuracy, interactivity]")
        if "turns" in self.metrics:
            raise ConfigError("metrics must not name 'turns': it is always reported")
        self._check_judge(self.metrics)
        at_least(self, 1, "max_turns", "num_samples")
        if not 0 < self.confidence < 1:
            raise ConfigError(f"confidence must be in (0, 1), got {self.confidence}")
        at_least(self, 1, "bootstrap_samples", "batch_size")


@dataclass
class PairsConfig:
    """Pairs: chosen/rejected from the scored candidates."""

    # Online-RLHF's choose_type names; dpo_iteration/pairing.py picks the pair (not a field: no annotation).
    STRATEGIES = ("max_min", "max_random", "max_max", "random")

    rewards_path: str = _help("Scored candidates (JSONL).", default="rewards.jsonl")
    output_path: str = _help("Where to write the pairs (JSONL, TRL conversational format).", default="pairs.jsonl")
    strategy: str = _help(
        "Which two scored candidates make the pair: 'max_min' the best against the worst; 'max_random' the best "
        "against one of the others drawn at random; 'max_max' the best against the second best (the hardest "
        "pair); 'random' two drawn at random, the higher reward chosen. Null rewards are left out first; among "
        "equal rewards the first candidate by index is taken; a pair of equal rewards is dropped, never redrawn.",
        default="max_min",
    )
    seed: int = _help(
        "Seed of the draws of 'max_random' and 'random'. A record's draw depends only on (seed, record id), so "
        "reruns, resumed runs and any record order give the same pairs.",
        default=0,
    )
    min_margin: float = _help("Drop pairs whose reward gap is below this (ties always drop).", default=0.0)
    pair_future_replies: bool = _help(
        "Also pair the policy's replies inside the simulated futures: the futures of one candidate that open "
        "with the same user turn are replies to one conversation, each scored by its own future (e.g. the "
        "answer after the user supplied a missing fact). Multi-turn pairs without another round of sampling.",
        default=False,
    )

    def __post_init__(self):
        if self.strategy not in self.STRATEGIES:
            raise ConfigError(f"strategy must be one of {list(self.STRATEGIES)}, got {self.strategy!r}")
        at_least(self, 0, "min_margin")
