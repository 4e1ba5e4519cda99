"""The pipeline, described once: its stages, and the command each stage runs in an iteration.

Each stage declares itself once, in its own module (`STAGE`, a `collabloop.stage_spec.StageSpec`); this
module registers them. A stage has one name: the console's `[name]`, the `stage` of its meta and its
config section (the trainer's section is the algorithm's: dpo, kto, ...). The driver's command lines, the
config sections, sharding, the merge, inspection, the report, the estimate and the benchmarks all read this
table; nothing here touches a file.

Iteration 0 is the evaluation of the initial model: the held-out openings (contexts of the eval tasks,
the same for every model) and their conversations. Iteration i >= 1 trains the policy of iteration i-1
(the initial model for i = 1) and evaluates the result on those openings.
"""

from __future__ import annotations

from pathlib import Path

from annotate_data.scoring import STAGE as ANNOTATE
from collabloop.config import ConfigError
from collabloop.loop_config import LoopConfig
from collabloop.roles import RolesConfig
from collabloop.stage_spec import CACHE, EVAL_CONTEXTS, StageSpec, Where
from dpo_iteration.grpo import STAGE as GRPO
from dpo_iteration.pairing import STAGE as PAIRS
from dpo_iteration.preference import STAGE as TRAIN
from generation.candidates import STAGE as GENERATE
from simulate.conversations import STAGE as EVALUATE
from simulate.futures import STAGE as SIMULATE
from simulate.openings import STAGE as CONTEXTS

__all__ = ["CACHE", "EVAL_CONTEXTS", "STAGES", "SECTIONS"]

STAGES: dict[str, StageSpec] = {s.name: s for s in (CONTEXTS, GENERATE, SIMULATE, ANNOTATE, PAIRS, TRAIN, GRPO,
                                                    EVALUATE)}

SECTIONS: dict[str, tuple[type, ...]] = {
    "loop": (LoopConfig,),
    "roles": (RolesConfig,),
    **{name: (s.config,) for name, s in STAGES.items() if not s.trainer},
}
"""The sections of a run YAML parsed by one of our config classes (the trainers' are checked by their keys:
TRL's config classes check the machine when built)."""


def record_stages() -> dict[str, StageSpec]:
    """The stages whose output is a record file, by name."""
    return {name: s for name, s in STAGES.items() if s.kind is not None}


def iteration_files() -> tuple[str, ...]:
    """The record files a training iteration's folder holds, in pipeline order: contexts, ..., pairs."""
    return tuple(Path(s.output).stem for s in record_stages().values() if "/" not in s.output)


def iteration_stages(loop: LoopConfig, iteration: int) -> list[str]:
    """The stages iteration `iteration` runs, in the table's order (each stage says when it runs)."""
    return [name for name, stage in STAGES.items() if stage.runs(loop, iteration)]


def register_stage(stage: StageSpec, after: str) -> None:
    """Add a stage of your own to the table, right after stage `after` (in a module that `loop.plugins` names,
    so every process of a run sees it). Its config section is parsed and checked like ours."""
    if stage.name in STAGES or stage.name in SECTIONS:
        raise ConfigError(f"a stage or section named {stage.name!r} exists already; give the stage another name")
    if after not in STAGES:
        raise ConfigError(f"register_stage({stage.name!r}, after={after!r}): no stage {after!r}; stages are "
                          f"{list(STAGES)}")
    table = list(STAGES.values())
    table.insert(list(STAGES).index(after) + 1, stage)
    STAGES.clear()
    STAGES.update((s.name, s) for s in table)
    if not stage.trainer:
        SECTIONS[stage.name] = (stage.config,)


def where(name: str, loop: LoopConfig, run_dir: str | Path, iteration: int) -> Where:
    if name not in STAGES:
        raise KeyError(f"no stage {name!r}; stages are {sorted(STAGES)}")
    return Where(name, loop, Path(run_dir), iteration, {n: s.output for n, s in STAGES.items()})


def iter_dir(run_dir: str | Path, iteration: int) -> Path:
    return Path(run_dir) / f"iter_{iteration}"


def policy(loop: LoopConfig, run_dir: str | Path, iteration: int) -> str:
    """The model iteration `iteration` starts from (and, for iteration 0, evaluates)."""
    return where("train", loop, run_dir, iteration).policy


def output_path(name: str, run_dir: str | Path, iteration: int) -> Path:
    return where(name, None, run_dir, iteration).output(name)


def needs_server(stage: StageSpec, loop: LoopConfig) -> bool:
    return bool(stage.roles and loop.simulator_model_path and loop.simulator_backend == "server")


def stage_args(name: str, loop: LoopConfig, config: str, run_dir: str | Path, iteration: int) -> list[str]:
    """The entry script and its arguments for stage `name` of iteration `iteration`: the run's config, then
    every input the stage declares (who plays each role, and the budget, come from the config: `roles`)."""
    stage = STAGES[name]
    return [stage.script, "--config", config, *stage.arguments(where(name, loop, run_dir, iteration))]


def check_inputs_not_set(path: str, data: dict, loop: LoopConfig) -> None:
    """Refuse a run YAML whose stage section sets a field the loop sets in every iteration: the loop's
    value would replace it unseen."""
    from collabloop.training import ALGORITHMS

    for stage in STAGES.values():
        sections = list(ALGORITHMS) if stage.section_is_algorithm else [stage.name]
        for section in sections:
            for key in set(data.get(section) or {}) & set(stage.inputs):
                source = stage.inputs[key]
                raise ConfigError(
                    f"{path}, section '{section}': '{key}' is set by the loop in every iteration "
                    f"({(source.__doc__ or source.__name__).strip().splitlines()[0]}); remove it from the YAML. "
                    f"To give it yourself, run the stage alone: python {stage.script} --config {path} "
                    f"--{key} VALUE"
                )
