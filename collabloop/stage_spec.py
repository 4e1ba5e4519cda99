"""What a stage declares about itself, once, in its own module: its `StageSpec`.

A stage is a name (the console's `[name]`, its config section, the `stage` of its meta), the entry script
a person runs, its config class, the file it writes, the record kind of that file, the model roles it
calls, the function that does the work, and its inputs: the config fields the loop sets in every
iteration, each with the place its value comes from (`Source`, a function of `Where`). The loop passes
exactly those fields, always, on the stage's command line; a run YAML that sets one of them is refused
(`collabloop.pipeline.check_inputs_not_set`), so no setting of a user's is overridden unseen.

`collabloop.pipeline.STAGES` registers the specs; everything else (the driver's command lines, the config
sections, shards, inspection, the report, the estimate) reads that table. Nothing here imports a stage.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EVAL_CONTEXTS = "eval_contexts.jsonl"  # in the run folder: the held-out openings of every iteration
CACHE = "llm_cache.sqlite"  # in the run folder: every simulator and judge response, and the run's spend


@dataclass(frozen=True)
class Where:
    """Where one stage runs: which stage, the loop's settings (`LoopConfig`), the run folder, the iteration."""

    stage: str
    loop: Any
    run_dir: Path
    iteration: int
    outputs: Mapping[str, str]  # stage name -> its output, relative to an iteration's folder

    def iter_dir(self, iteration: int | None = None) -> Path:
        return self.run_dir / f"iter_{self.iteration if iteration is None else iteration}"

    def output(self, stage: str, iteration: int | None = None) -> Path:
        """The output of `stage` in this iteration (or another); the contexts of iteration 0 are the run's
        held-out openings."""
        iteration = self.iteration if iteration is None else iteration
        if stage == "contexts" and iteration == 0:
            return self.run_dir / EVAL_CONTEXTS
        return self.iter_dir(iteration) / self.outputs[stage]

    @property
    def policy(self) -> str:
        """The model this iteration starts from (and iteration 0 evaluates)."""
        return self.loop.initial_model if self.iteration <= 1 else str(self.output("train", self.iteration - 1))


Source = Callable[[Where], str]
"""Where an input's value comes from; "" is a value (an empty setting), never "leave it to the YAML"."""


# The vocabulary of sources: what a stage's inputs are made of.
def own_output(w: Where) -> str:
    """The stage's own output in this iteration."""
    return str(w.output(w.stage))


def own_output_folder(w: Where) -> str:
    """The folder of the stage's own output in this iteration."""
    return str(w.output(w.stage).parent)


def policy(w: Where) -> str:
    """The model this iteration starts from."""
    return w.policy


def initial_model(w: Where) -> str:
    """loop.initial_model."""
    return w.loop.initial_model


def train_tasks(w: Where) -> str:
    """loop.train_tasks."""
    return w.loop.train_tasks


def eval_tasks(w: Where) -> str:
    """loop.eval_tasks."""
    return w.loop.eval_tasks


def iteration(w: Where) -> str:
    """The iteration's number."""
    return str(w.iteration)


def llm_cache(w: Where) -> str:
    """The run's cache of simulator and judge responses, which also keeps the run's spend."""
    return str(w.run_dir / CACHE)


def eval_contexts(w: Where) -> str:
    """The run's held-out openings, made in iteration 0."""
    return str(w.run_dir / EVAL_CONTEXTS)


def output_of(stage: str) -> Source:
    """The output of another stage in the same iteration."""
    def source(w: Where) -> str:
        return str(w.output(stage))

    source.__doc__ = f"The output of the {stage} stage of this iteration."

    source.__name__ = f"output_of({stage!r})"
    return source


# Which iterations run a stage, in the words of the loop's settings.
def offline_training(loop: Any, iteration: int) -> bool:
    """A training iteration of a preference algorithm: candidates, rewards and pairs, then the trainer."""
    return iteration >= 1 and not loop.online


def with_held_out_tasks(loop: Any, iteration: int) -> bool:
    """Every iteration of a run that has held-out tasks (loop.eval_tasks); iteration 0 evaluates the initial
    model."""
    return bool(loop.eval_tasks)


@dataclass(frozen=True)
class StageSpec:
    name: str
    script: str  # entry script, relative to the repository root
    config: type  # our config class (a trainer's section also takes its TRL config's keys)
    output: str  # file (or model folder) in the iteration's folder
    kind: str | None  # record kind of the output (`records.RECORD_TYPES`); None: a model folder
    run: Callable[..., Any]  # the function that does the work (the entry script calls it)
    inputs: Mapping[str, Source] = field(default_factory=dict)  # config field -> where the loop takes it
    roles: tuple[str, ...] = ()  # the models it calls besides the policy: simulator, judge, assistant
    per_record: bool = False  # shardable: each record is made alone, so shards can split the input's chunks
    section_is_algorithm: bool = False  # its YAML section is named by loop.algorithm (dpo, kto, ...)
    runs: Callable[[Any, int], bool] = lambda loop, iteration: iteration >= 1  # (LoopConfig, iteration) -> runs?

    @property
    def trainer(self) -> bool:
        return self.kind is None

    def section(self, loop: Any) -> str:
        return loop.algorithm if self.section_is_algorithm else self.name

    def arguments(self, where: Where) -> list[str]:
        """`--field value` for every declared input, in declaration order."""
        args = []
        for name, source in self.inputs.items():
            value = source(where)
            if not isinstance(value, str):
                raise TypeError(f"stage {self.name}: input {name} ({source.__name__}) gave {value!r}, not text")
            args += [f"--{name}", value]
        return args
