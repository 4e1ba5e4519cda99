"""DPO on the pairs with TRL, under `accelerate launch` (DeepSpeed ZeRO-2 by default).

The model is trained into `<output_dir>.partial/` and renamed to
`<output_dir>` when complete, with `<output_dir>.meta.json` beside it; a rerun
with the same pairs, models and config does nothing.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from collabloop.jsonl import read_records, write_json
from collabloop.records import Pair
from collabloop.stage import StageRun

logger = logging.getLogger(__name__)

# Logged by TRL's DPOTrainer; kept in train_metrics.json for the loop summary.
SUMMARY_KEYS = ("loss", "rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected")


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def machine_defaults() -> dict:
    """DPOConfig values for this machine, applied below the YAML and the command line."""
    import torch

    if torch.cuda.is_available():
        return {}
    # Without CUDA, accelerate finds no NCCL and each rank would train alone; gloo joins them.
    # TRL defaults to bf16, which transformers allows on CPU only with use_cpu.
    return {"ddp_backend": "gloo", "use_cpu": True}


def summarize(log_history: list[dict]) -> dict:
    train_logs = [e for e in log_history if "loss" in e]
    out = {"steps": len(train_logs)}
    if train_logs:
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


def run(script_args, dpo_args) -> dict | None:
    output_dir = Path(dpo_args.output_dir)
    inputs = {"pairs": script_args.pairs_path, "model": script_args.model_name_or_path}
    if script_args.ref_model:
        inputs["ref_model"] = script_args.ref_model
    # The output is a model folder; its meta file is <output_dir>.meta.json beside it, as for JSONL outputs.
    stage = StageRun("dpo", output_dir, Pair, (script_args, dpo_args), inputs)
    if stage.up_to_date():
        return None

    pairs = read_records(script_args.pairs_path, Pair)
    partial_dir = output_dir.with_name(output_dir.name + ".partial")
    stage.counts["pairs_in"] = len(pairs)
    if not pairs:
        logger.warning("no pairs in %s: nothing to learn; the model is copied unchanged", script_args.pairs_path)
        if _is_main_process():
            shutil.rmtree(partial_dir, ignore_errors=True)
            shutil.copytree(script_args.model_name_or_path, partial_dir)
            write_json(partial_dir / "train_metrics.json", {"steps": 0, "skipped": "no pairs"})
            _publish(partial_dir, output_dir, stage)
        return {"counts": dict(stage.counts), "metrics": {"steps": 0, "skipped": "no pairs"}}

    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOTrainer

    dpo_args.output_dir = str(partial_dir)
    tokenizer = AutoTokenizer.from_pretrained(script_args.model_name_or_path)
    model = AutoModelForCausalLM.from_pretrained(script_args.model_name_or_path)
    ref_model = AutoModelForCausalLM.from_pretrained(script_args.ref_model) if script_args.ref_model else None
    # File-backed dataset: every rank reads the same file (in-memory datasets break multi-process runs).
    columns = ["prompt", "chosen", "rejected"]
    dataset = load_dataset("json", data_files=script_args.pairs_path, split="train").select_columns(columns)
    trainer = DPOTrainer(
        model=model, ref_model=ref_model, args=dpo_args, train_dataset=dataset, processing_class=tokenizer
    )
    accelerator = trainer.accelerator
    stage.counts["world_size"] = accelerator.num_processes
    plugin = accelerator.state.deepspeed_plugin
    stage.counts["deepspeed_zero_stage"] = plugin.zero_stage if plugin is not None else "off"
    trainer.train()
    trainer.save_model(str(partial_dir))
    metrics = summarize(trainer.state.log_history)
    trainer.accelerator.wait_for_everyone()
    if _is_main_process():
        tokenizer.save_pretrained(partial_dir)
        write_json(partial_dir / "train_metrics.json", {**metrics, "log_history": trainer.state.log_history})
        for leftover in partial_dir.glob("checkpoint-*"):
            shutil.rmtree(leftover)
        _publish(partial_dir, output_dir, stage)
    stage.counts["train_steps"] = metrics.get("steps", 0)
    return {"counts": dict(stage.counts), "metrics": metrics}


def _publish(partial_dir: Path, output_dir: Path, stage: StageRun) -> None:
    if output_dir.exists():
        shutil.rmtree(output_dir)
    partial_dir.rename(output_dir)
    write_json(stage.meta_path, stage._meta("complete"))


def read_train_metrics(model_dir: str | Path) -> dict:
    path = Path(model_dir) / "train_metrics.json"
    return json.loads(path.read_text()) if path.exists() else {}
