"""What every trainer stage shares: the algorithms, machine defaults, and publishing a finished model.

A trainer writes into `<output_dir>.partial/` and renames it to `<output_dir>`
when done, with `<output_dir>.meta.json` beside it (written last); a killed
run leaves no half model where the next iteration looks for one. With LoRA
the adapter is kept in `<output_dir>/adapter/` and the merged weights are the
model, so vLLM loads the next iteration's policy as a plain checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from collabloop.jsonl import write_json

logger = logging.getLogger(__name__)

# Logged by TRL's trainers (those present); kept in train_metrics.json for summaries and reports.
SUMMARY_KEYS = (
    "loss", "rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected", "accuracy", "margin",
    "reward", "kl",
)


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


# Trainer-config values of ours, below the YAML and the command line: a checkpoint every 10 optimizer steps
# (the demo's trainings take 8 to 32), only the newest kept (with its optimizer state it is several times the
# model's size), so that a killed run resumes from its last complete checkpoint.
CHECKPOINT_DEFAULTS = {"save_strategy": "steps", "save_steps": 10, "save_total_limit": 1}
# In the partial folder: the fingerprint of the run whose checkpoints it holds.
RUN_FILE = "collabloop_run.json"


def trainer_defaults() -> dict:
    """What every trainer stage sets below the YAML and the command line: checkpoints, then this machine."""
    return {**CHECKPOINT_DEFAULTS, **machine_defaults()}


def machine_defaults() -> dict:
    """Trainer-config values for this machine, applied below the YAML and the command line."""
    import torch

    if torch.cuda.is_available():
        return {}
    # On a CPU both of TRL's GPU defaults cost time. bf16 (TRL's default, allowed on CPU only with use_cpu)
    # runs as autocast: a 4-pair DPO step of the embedded model took 12.6 s in bf16 and 8.0 s in float32 on
    # a 2-core Xeon with AVX512-BF16 (no AMX), and 34 s in bf16 on an AVX2-only EPYC, where it is emulated.
    # Gradient checkpointing saves GPU memory by recomputing activations: 14.7 s a step with it, 13.8
    # without (bf16, 2 ranks). vLLM's sampling is another matter: there bf16 is the faster where native.
    defaults = {"use_cpu": True, "bf16": False, "gradient_checkpointing": False}
    # Without CUDA, accelerate finds no NCCL and each rank would train alone; gloo joins them. Only under
    # a launcher: in a plain process (one rank, or `--check_up_to_date`) a backend makes accelerate ask
    # for a process group that nobody started.
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        defaults["ddp_backend"] = "gloo"
    return defaults


@dataclass(frozen=True)
class Algorithm:
    config_class: str  # "module:Class"
    trainer_class: str
    uses_reference: bool
    defaults: dict = field(default_factory=dict)
    note: str = ""

    def load(self, which: str):
        import importlib
        import os

        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # CPO/ORPO live in trl.experimental
        module, name = getattr(self, which).split(":")
        return getattr(importlib.import_module(module), name)


ALGORITHMS: dict[str, Algorithm] = {
    "dpo": Algorithm("trl:DPOConfig", "trl:DPOTrainer", True),
    "kto": Algorithm("trl:KTOConfig", "trl:KTOTrainer", True),
    "cpo": Algorithm("trl.experimental.cpo:CPOConfig", "trl.experimental.cpo:CPOTrainer", False,
                     {"simpo_gamma": 1.0}, "ms-swift's simpo_gamma 1.0 (TRL: 0.5; used only by loss_type simpo)"),
    # TRL has no SimPO trainer: SimPO is CPO with loss_type simpo. ms-swift: beta 2.0, simpo_gamma 1.0,
    # cpo_alpha 1.0 (CPO-SimPO); cpo_alpha 0 gives the paper's pure SimPO.
    "simpo": Algorithm("trl.experimental.cpo:CPOConfig", "trl.experimental.cpo:CPOTrainer", False,
                       {"loss_type": "simpo", "beta": 2.0, "simpo_gamma": 1.0, "cpo_alpha": 1.0},
                       "ms-swift's beta 2.0, simpo_gamma 1.0, cpo_alpha 1.0 (TRL: 0.1, 0.5, 1.0)"),
    "orpo": Algorithm("trl.experimental.orpo:ORPOConfig", "trl.experimental.orpo:ORPOTrainer", False),
}

# Online algorithms: a stage of the algorithm's name samples and rewards its own replies (no candidates or
# pairs); its config is the section of that name.
ONLINE_ALGORITHMS = ("grpo",)


def load_tokenizer(model_path: str):
    """The model's tokenizer, padding with its end-of-sequence token when it names no pad token
    (TRL's trainers pad batches; the GGUF-converted embedded model's tokenizer has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def summarize(log_history: list[dict]) -> dict:
    """First, last and mean of the logged training values; the number of logged steps."""
    train_logs = [e for e in log_history if "loss" in e]
    out: dict = {"steps": len(train_logs)}
    for key in SUMMARY_KEYS:
        values = [e[key] for e in train_logs if key in e]
        if values:
            out[f"first_{key}"] = values[0]
            out[f"last_{key}"] = values[-1]
            out[f"mean_{key}"] = sum(values) / len(values)
    final = [e for e in log_history if "train_loss" in e]
    if final:
        out["train_loss"] = final[-1]["train_loss"]
    return out


def save_trained(trainer, tokenizer, partial_dir: Path, lora) -> dict:
    """Save the trained model (merged, with its adapter beside it, under LoRA) and its training metrics.

    Every rank calls this (saving under DeepSpeed gathers from all ranks);
    only the main process writes files.
    """
    metrics = summarize(trainer.state.log_history)
    if lora.use_peft:
        trainer.save_model(str(partial_dir / "adapter"))
        trainer.accelerator.wait_for_everyone()
        if is_main_process():
            merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
            merged.save_pretrained(str(partial_dir))
    else:
        trainer.save_model(str(partial_dir))
    trainer.accelerator.wait_for_everyone()
    if is_main_process():
        tokenizer.save_pretrained(partial_dir)
        write_json(partial_dir / "train_metrics.json", {**metrics, "log_history": trainer.state.log_history})
        for leftover in partial_dir.glob("checkpoint-*"):
            shutil.rmtree(leftover)
        (partial_dir / RUN_FILE).unlink(missing_ok=True)
    return metrics


def partial_dir_for(output_dir: Path) -> Path:
    return output_dir.with_name(output_dir.name + ".partial")


def _checkpoint_step(path: Path) -> int | None:
    step = path.name.removeprefix("checkpoint-")
    return int(step) if path.is_dir() and step.isdigit() else None


def resume_checkpoint(partial_dir: Path, fingerprint: str) -> Path | None:
    """The last complete checkpoint that an interrupted run of the same stage (same fingerprint: inputs and
    config) left in the partial folder, or None. The trainer writes a checkpoint's trainer_state.json last,
    after the weights, the optimizer's and scheduler's states and the RNG states: without it, a kill cut the
    checkpoint short."""
    run_file = partial_dir / RUN_FILE
    try:
        if json.loads(run_file.read_text()).get("fingerprint") != fingerprint:
            return None
    except (OSError, ValueError):  # missing, or cut short by a kill
        return None
    complete = [p for p in partial_dir.glob("checkpoint-*")
                if _checkpoint_step(p) is not None and (p / "trainer_state.json").is_file()]
    return max(complete, key=_checkpoint_step) if complete else None


def prepare_resume(trainer, partial_dir: Path, stage) -> Path | None:
    """Every rank finds the checkpoint to resume from before the main process removes the checkpoints no
    run can use (another run's, or cut short) and marks the folder as this run's."""
    resume = resume_checkpoint(partial_dir, stage.fingerprint)
    trainer.accelerator.wait_for_everyone()
    if is_main_process():
        for path in partial_dir.glob("checkpoint-*"):
            if resume is None or _checkpoint_step(path) is None or _checkpoint_step(path) > _checkpoint_step(resume):
                shutil.rmtree(path, ignore_errors=True)
        write_json(partial_dir / RUN_FILE, {"stage": stage.name, "fingerprint": stage.fingerprint})
    trainer.accelerator.wait_for_everyone()
    if resume is not None:
        logger.info("%s: resuming from %s", stage.name, resume)
        stage.counts["resumed_from_step"] = _checkpoint_step(resume)
    return resume


def train_and_publish(trainer, tokenizer, output_dir: Path, stage, lora) -> dict:
    """Train (resuming from the last complete checkpoint of an interrupted run of the same stage), save into
    the partial folder, publish it as `output_dir`; returns the training summary.

    `lora` is the stage's `LoraArgs`; the trainer's output_dir must be the partial folder.
    """
    describe_accelerator(trainer, stage.counts)
    resume = prepare_resume(trainer, partial_dir_for(output_dir), stage)
    trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    import torch

    if torch.cuda.is_available():  # this rank's peak, the figure a GPU plan needs (bench/gpu_check.sh reads it)
        stage.counts["peak_gpu_memory_mib"] = int(torch.cuda.max_memory_allocated() // 2**20)
    metrics = save_trained(trainer, tokenizer, partial_dir_for(output_dir), lora)
    stage.counts["train_steps"] = metrics.get("steps", 0)  # before publish, which writes the meta
    if is_main_process():
        stage.publish(partial_dir_for(output_dir))
    return metrics


def copy_unchanged(model_path: str, output_dir: Path, stage, reason: str) -> dict:
    """Nothing to learn from: the next iteration starts from the same weights, and says why."""
    logger.warning("%s: the model is copied unchanged", reason)
    metrics = {"steps": 0, "skipped": reason}
    if is_main_process():
        partial_dir = partial_dir_for(output_dir)
        shutil.rmtree(partial_dir, ignore_errors=True)
        shutil.copytree(model_path, partial_dir)
        write_json(partial_dir / "train_metrics.json", metrics)
        stage.publish(partial_dir)
    return metrics


def read_train_metrics(model_dir: str | Path) -> dict:
    path = Path(model_dir) / "train_metrics.json"
    return json.loads(path.read_text()) if path.exists() else {}


def describe_accelerator(trainer, counts) -> None:
    accelerator = trainer.accelerator
    counts["world_size"] = accelerator.num_processes
    plugin = accelerator.state.deepspeed_plugin
    counts["deepspeed_zero_stage"] = plugin.zero_stage if plugin is not None else "off"
