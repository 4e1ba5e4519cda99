"""The pipeline, described once: its stages, and the command each stage runs in an iteration.

A stage has one name: the console's `[name]`, the `stage` of its meta and its config section (the
trainer's section is the algorithm's: dpo, kto, ...). Sharding, the merge, inspection, the report, the
estimate, the driver and the benchmarks all read this table; nothing here touches a file.

Iteration 0 is the evaluation of the initial model: the held-out openings (contexts of the eval tasks,
the same for every model) and their conversations. Iteration i >= 1 trains the policy of iteration i-1
(the initial model for i = 1) and evaluates the result on those openings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from collabloop.config import ConfigError
from collabloop.loop_config import LoopConfig


@dataclass(frozen=True)
class Stage:
    name: str
    script: str  # entry script, relative to the repository root
    output: str  # file (or model folder) in the iteration's folder
    kind: str | None  # record kind of the output (`records.RECORD_TYPES`); None: a model folder
    per_record: bool = False  # shardable: each record is made alone, so shards can split the input's chunks
    calls: tuple[str, ...] = ()  # the remote models it calls: simulator, judge, assistant

    @property
    def trainer(self) -> bool:
        return self.kind is None


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("contexts", "simulate/make_contexts.py", "contexts.jsonl", "contexts", calls=("simulator",)),
    Stage("generate", "generation/generate.py", "generations.jsonl", "generations", per_record=True),
    Stage("simulate", "simulate/simulate_futures.py", "simulations.jsonl", "simulations", per_record=True,
          calls=("simulator",)),
    Stage("annotate", "annotate_data/annotate.py", "rewards.jsonl", "rewards", per_record=True, calls=("judge",)),
    Stage("pairs", "dpo_iteration/pairs.py", "pairs.jsonl", "pairs"),
    Stage("train", "dpo_iteration/train_preference.py", "model", None),
    Stage("grpo", "dpo_iteration/train_grpo.py", "model", None, calls=("simulator", "judge", "assistant")),
    Stage("evaluate", "simulate/evaluate.py", "eval/conversations.jsonl", "evaluation", per_record=True,
          calls=("simulator", "judge")),
)}

EVAL_CONTEXTS = "eval_contexts.jsonl"  # in the run folder: the held-out openings of every iteration
CACHE = "llm_cache.sqlite"  # in the run folder: every simulator and judge response, and the run's spend


def record_stages() -> dict[str, Stage]:
    """The stages whose output is a record file, by name."""
    return {name: s for name, s in STAGES.items() if s.kind is not None}


def iteration_files() -> tuple[str, ...]:
    """The record files a training iteration's folder holds, in pipeline order: contexts, ..., pairs."""
    return tuple(Path(s.output).stem for s in record_stages().values() if "/" not in s.output)


def iteration_stages(loop: LoopConfig, iteration: int) -> list[str]:
    """The stages iteration `iteration` runs, in order."""
    evaluate = ["evaluate"] if loop.eval_tasks else []
    if iteration == 0:
        return ["contexts", *evaluate] if evaluate else []
    if loop.algorithm == "grpo":  # online: the trainer samples and rewards its own replies
        return ["contexts", "grpo", *evaluate]
    simulate = ["simulate"] if loop.use_simulation else []
    return ["contexts", "generate", *simulate, "annotate", "pairs", "train", *evaluate]


def iter_dir(run_dir: str | Path, iteration: int) -> Path:
    return Path(run_dir) / f"iter_{iteration}"


def policy(loop: LoopConfig, run_dir: str | Path, iteration: int) -> str:
    """The model iteration `iteration` starts from (and, for iteration 0, evaluates)."""
    return loop.initial_model if iteration <= 1 else str(iter_dir(run_dir, iteration - 1) / "model")


def output_path(name: str, run_dir: str | Path, iteration: int) -> Path:
    if name == "contexts" and iteration == 0:
        return Path(run_dir) / EVAL_CONTEXTS
    return iter_dir(run_dir, iteration) / STAGES[name].output


def model_args(stage: Stage, loop: LoopConfig) -> list[str]:
    """Who plays the user, the judge and the assistant of the futures: the loop's local model, in the
    stage's process or on the run's server; without one, the stage sections' own models."""
    if not loop.simulator_model_path:
        return []
    args = []
    for role in stage.calls:
        if loop.simulator_backend == "in_process":
            args += [f"--{role}_model", f"local/{loop.simulator_model_path}"]
        else:
            args += [f"--{role}_model", f"hosted_vllm/{loop.simulator_served_name}",
                     f"--{role}_api_base", server_api_base(loop)]
    return args


def server_api_base(loop: LoopConfig) -> str:
    return f"http://127.0.0.1:{loop.simulator_port}/v1"


def needs_server(stage: Stage, loop: LoopConfig) -> bool:
    return bool(stage.calls and loop.simulator_model_path and loop.simulator_backend == "server")


def stage_args(name: str, loop: LoopConfig, config: str, run_dir: str | Path, iteration: int) -> list[str]:
    """The entry script and its arguments for stage `name` of iteration `iteration`."""
    stage = STAGES[name]
    run_dir = Path(run_dir)
    cache = ["--llm_cache_path", str(run_dir / CACHE)]
    model = policy(loop, run_dir, iteration)
    out = str(output_path(name, run_dir, iteration))
    if name == "contexts" and iteration == 0:
        args = ["--tasks_path", loop.eval_tasks, "--iteration", "0", "--output_path", out, *cache,
                "--continue_from", ""]
    elif name == "contexts":
        args = ["--tasks_path", loop.train_tasks, "--iteration", str(iteration), "--output_path", out, *cache]
        if iteration > 1 and loop.continue_conversations and loop.algorithm != "grpo":
            args += ["--continue_from", str(output_path("annotate", run_dir, iteration - 1))]
    elif name == "generate":
        args = ["--model", model, "--contexts_path", str(output_path("contexts", run_dir, iteration)),
                "--output_path", out]
    elif name == "simulate":
        args = ["--model", model, "--tasks_path", loop.train_tasks,
                "--generations_path", str(output_path("generate", run_dir, iteration)), "--output_path", out, *cache]
    elif name == "annotate":
        scored = (["--simulations_path", str(output_path("simulate", run_dir, iteration))] if loop.use_simulation
                  else ["--simulations_path", str(output_path("generate", run_dir, iteration)),
                        "--without_futures", "true"])
        args = ["--tokenizer", model, "--tasks_path", loop.train_tasks, *scored, "--output_path", out, *cache]
    elif name == "pairs":
        args = ["--rewards_path", str(output_path("annotate", run_dir, iteration)), "--output_path", out]
    elif name == "train":
        reference = model if loop.reference == "previous" else loop.initial_model
        args = ["--algorithm", loop.algorithm, "--pairs_path", str(output_path("pairs", run_dir, iteration)),
                "--rewards_path", str(output_path("annotate", run_dir, iteration)),
                "--model_name_or_path", model, "--ref_model", reference, "--output_dir", out]
    elif name == "grpo":
        args = ["--contexts_path", str(output_path("contexts", run_dir, iteration)), "--tasks_path", loop.train_tasks,
                "--model_name_or_path", model, "--output_dir", out, "--tokenizer", model, *cache]
    elif name == "evaluate":
        evaluated = loop.initial_model if iteration == 0 else str(output_path("train", run_dir, iteration))
        args = ["--model", evaluated, "--iteration", str(iteration), "--tasks_path", loop.eval_tasks,
                "--contexts_path", str(run_dir / EVAL_CONTEXTS), "--output_dir", str(Path(out).parent),
                "--tokenizer", loop.initial_model, *cache]
    else:
        raise KeyError(f"no stage {name!r}; stages are {sorted(STAGES)}")
    budget = ["--max_cost_usd", str(loop.max_cost_usd)] if stage.calls and loop.max_cost_usd is not None else []
    return [stage.script, "--config", config, *args, *model_args(stage, loop), *budget]


@dataclass(frozen=True)
class Devices:
    """Where the processes of a run go: training ranks, and the shards of the per-record stages."""

    num_gpus: int
    num_processes: int  # training ranks
    num_shards: int


def plan_devices(loop: LoopConfig, num_gpus: int) -> Devices:
    num_processes = loop.num_processes or num_gpus or 2  # CPU-only: ZeRO-2 over 2 gloo processes
    num_shards = loop.num_shards or num_gpus or 1
    if num_gpus and num_shards > num_gpus:
        raise ConfigError(f"loop.num_shards={num_shards} but this machine has {num_gpus} GPUs; each shard's vLLM "
                          "engine needs a GPU of its own")
    return Devices(num_gpus, num_processes, num_shards)


def shard_places(devices: Devices, cpus: list[int]) -> list[dict]:
    """Per shard: the environment it adds (its GPU) and the CPU cores it may use (its share of `cpus`)."""
    per = max(1, len(cpus) // devices.num_shards)
    places = []
    for s in range(devices.num_shards):
        if devices.num_gpus:
            places.append({"env": {"CUDA_VISIBLE_DEVICES": str(s)}, "cpus": cpus})
        else:
            first = (s * per) % len(cpus)
            places.append({"env": {}, "cpus": cpus[first : first + per]})
    return places
