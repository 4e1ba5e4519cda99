"""The driver's config: the `loop:` section of a run YAML."""

from __future__ import annotations

from dataclasses import dataclass

from collabloop.config_error import ConfigError, at_least
from collabloop.stage_configs import EMBEDDED_MODEL, SERVED_NAME, SERVER_PORT, _check_budget, _help


@dataclass
class LoopConfig:
    """The driver: how many iterations, which model and tasks, where the run goes."""

    run_dir: str = _help("Folder of the run (config, one iter_<i>/ per iteration).", default="data/runs/demo")
    num_iterations: int = _help(
        "Iterations of generate -> simulate -> annotate -> pairs -> train; 0: only evaluate initial_model on "
        "eval_tasks (any model on any task file, no training).",
        default=2,
    )
    initial_model: str = _help(
        "The starting policy, and the DPO reference model.",
        default=EMBEDDED_MODEL,
    )
    train_tasks: str = _help("Tasks to build contexts from each iteration.", default="data/tasks/math_demo_train.jsonl")
    simulator_model_path: str = _help(
        "Local model that plays the user and the judge (see simulator_backend); empty: the simulator_model and "
        "judge_model of the `roles:` section or of the stage sections (API models or servers of your own), "
        "which, where set, take precedence over it.",
        default=EMBEDDED_MODEL,
    )
    simulator_backend: str = _help(
        "How the local simulator model runs: 'in_process' (a vLLM engine inside each stage that calls it, as "
        "'local/<path>'; the policy's own engine when it is the same model) or 'server' (one vLLM OpenAI server for "
        "the run on simulator_port, called through litellm). Not 'in_process' with algorithm grpo, whose trainer "
        "ranks would each start an engine.",
        default="in_process",
    )
    simulator_port: int = _help("Port of the simulator server on 127.0.0.1 (simulator_backend server).",
                                default=SERVER_PORT)
    server_gpu_memory_utilization: float = _help(
        "Share of the first visible GPU the run's simulator server takes (simulator_backend server); it lives "
        "across stages beside their engines, and is stopped before training. Ignored on CPU.",
        default=0.3,
    )
    server_max_model_len: int = _help("Context length in tokens of the run's simulator server.", default=4096)
    simulator_served_name: str = _help(
        "Name the server serves the model under (hosted_vllm/<name>).",
        default=SERVED_NAME,
    )
    continue_conversations: bool = _help(
        "From iteration 2 on, contexts also continue the previous iteration's conversations (multi-turn data).",
        default=True,
    )
    algorithm: str = _help(
        "Training algorithm: dpo, kto, cpo, simpo or orpo (on the iteration's pairs), or grpo (online: no "
        "candidates or pairs; each sampled reply is rewarded by simulated futures). Settings in the section of "
        "that name.",
        default="dpo",
    )
    reference: str = _help(
        "Reference model of DPO/KTO: 'initial' (the initial model in every iteration, as Online-RLHF's authors "
        "recommend) or 'previous' (the previous iteration's model).",
        default="initial",
    )
    use_simulation: bool = _help(
        "Simulate futures and score them (CollabLLM's multiturn-aware reward); false: score each candidate alone "
        "(Online-RLHF: annotate with a reward model, metric rm_score).",
        default=True,
    )
    eval_tasks: str = _help(
        "Held-out tasks to evaluate the initial model and every iteration's model on in full conversations "
        "(settings in the evaluate section); empty: no evaluation.",
        default="",
    )
    accelerate_config: str = _help("accelerate config for training.", default="configs/zero2.yaml")
    num_processes: int = _help("Training processes; 0: one per GPU, or 2 on a CPU-only machine.", default=0)
    num_shards: int = _help(
        "Processes that split each per-record stage (generate, simulate, annotate, evaluate), merged after; "
        "0: one per GPU (each shard sees one GPU), or 1 on a CPU-only machine. On a CPU machine each shard "
        "gets its own share of the cores.",
        default=0,
    )
    plugins: list[str] = _help(
        "Python modules imported by every stage before it reads records: register task kinds and metrics of "
        "your own there (collabloop.task_kinds.register_task_kind, collabloop.metrics.register_metric).",
        default_factory=list,
    )
    max_cost_usd: float | None = _help(
        "Budget in US dollars of the whole run's simulator and judge calls (contexts, simulate, annotate, "
        "evaluate pass it on as their max_cost_usd); the spend is kept in <run_dir>/llm_cache.sqlite. A stage "
        "stops before a call that could pass it; raise it and rerun to resume. Null: no budget.",
        default=None,
    )

    def __post_init__(self):
        _check_budget(self.max_cost_usd)
        bad = [p for p in self.plugins if not isinstance(p, str) or not p.strip()]
        if bad:
            raise ConfigError(f"plugins must be module names like [my_kinds], got {bad!r} among {self.plugins!r}")
        at_least(self, 0, "num_iterations")
        if self.num_iterations == 0 and not self.eval_tasks:
            raise ConfigError("num_iterations is 0 (evaluate the initial model, no training) but eval_tasks is empty; "
                              "set loop.eval_tasks to a task file")
        from collabloop.training import ALGORITHMS, ONLINE_ALGORITHMS

        if self.algorithm not in [*ALGORITHMS, *ONLINE_ALGORITHMS]:
            raise ConfigError(f"algorithm must be one of {sorted([*ALGORITHMS, *ONLINE_ALGORITHMS])}, "
                              f"got {self.algorithm!r}")
        if self.simulator_backend not in ("in_process", "server"):
            raise ConfigError(f"simulator_backend must be 'in_process' or 'server', got {self.simulator_backend!r}")
        if self.online and self.simulator_model_path and self.simulator_backend == "in_process":
            raise ConfigError(
                f"algorithm {self.algorithm} needs simulator_backend 'server' (each trainer rank would start its own "
                "engine); set loop.simulator_backend: server"
            )
        if self.reference not in ("initial", "previous"):
            raise ConfigError(f"reference must be 'initial' or 'previous', got {self.reference!r}")
        at_least(self, 0, "num_processes", "num_shards")
        at_least(self, 16, "server_max_model_len")
        if not 0 < self.server_gpu_memory_utilization < 1:
            raise ConfigError(
                f"server_gpu_memory_utilization must be in (0, 1), got {self.server_gpu_memory_utilization}"
            )

    @property
    def online(self) -> bool:
        """An online algorithm: its trainer samples and rewards its own replies (no candidates or pairs)."""
        from collabloop.training import ONLINE_ALGORITHMS

        return self.algorithm in ONLINE_ALGORITHMS

    @property
    def server_api_base(self) -> str:
        """The run's simulator server (simulator_backend server)."""
        return f"http://127.0.0.1:{self.simulator_port}/v1"
