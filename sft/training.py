"""Supervised fine-tuning with TRL's SFTTrainer, loss on assistant turns only."""

from __future__ import annotations

import logging
from pathlib import Path

from collabloop.jsonl import write_records
from collabloop.stage import ModelRun
from collabloop.trainer_configs import SFTArgs
from collabloop.training import copy_unchanged, load_tokenizer, partial_dir_for, train_and_publish
from sft.sft_data import load_examples, prompt_completion_rows

logger = logging.getLogger(__name__)


def run(args: SFTArgs, sft_args) -> dict | None:
    output_dir = Path(sft_args.output_dir)
    stage = ModelRun("sft", output_dir, (args, sft_args),
                     {"sft": args.sft_path, "model": args.model_name_or_path},
                     code=("sft.training", "collabloop.training"))
    if stage.up_to_date():
        return None
    examples = load_examples(args.sft_path)
    rows = prompt_completion_rows(examples)
    stage.counts["conversations"] = len(examples)
    stage.counts["assistant_turns"] = len(rows)
    if not rows:
        metrics = copy_unchanged(args.model_name_or_path, output_dir, stage, f"no examples in {args.sft_path}")
        return {"counts": dict(stage.counts), "metrics": metrics}

    from datasets import load_dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTTrainer

    # File-backed rows (every rank writes the same content atomically): multi-process runs need a file.
    rows_path = output_dir.with_name(output_dir.name + ".rows.jsonl")
    write_records(rows_path, rows)
    sft_args.output_dir = str(partial_dir_for(output_dir))
    tokenizer = load_tokenizer(args.model_name_or_path)
    model = AutoModelForCausalLM.from_pretrained(args.model_name_or_path)
    dataset = load_dataset("json", data_files=str(rows_path), split="train")
    trainer = SFTTrainer(model=model, args=sft_args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=args.peft_config())
    metrics = train_and_publish(trainer, tokenizer, output_dir, stage, args)
    return {"counts": dict(stage.counts), "metrics": metrics}
