"""Reward-model training on pairs with TRL's RewardTrainer; saved as a one-label sequence classifier.

The model it writes is what `annotate.reward_model` (metric rm_score) reads:
the Online-RLHF recipe scores candidates with it instead of simulating futures.
"""

from __future__ import annotations

import logging
from pathlib import Path

from collabloop.jsonl import read_records
from collabloop.records import Pair
from collabloop.stage import ModelRun
from collabloop.trainer_configs import RewardModelArgs
from collabloop.training import load_tokenizer, partial_dir_for, train_and_publish

logger = logging.getLogger(__name__)


def run(args: RewardModelArgs, reward_args) -> dict | None:
    output_dir = Path(reward_args.output_dir)
    stage = ModelRun("reward", output_dir, (args, reward_args),
                     {"pairs": args.pairs_path, "model": args.model_name_or_path},
                     code=("dpo_iteration.reward_training", "collabloop.training"))
    if stage.up_to_date():
        return None
    pairs = read_records(args.pairs_path, Pair)
    stage.counts["pairs_in"] = len(pairs)
    if not pairs:
        raise ValueError(f"{args.pairs_path} holds no pairs: a reward model cannot be trained from nothing")

    from datasets import load_dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardTrainer

    reward_args.output_dir = str(partial_dir_for(output_dir))
    tokenizer = load_tokenizer(args.model_name_or_path)
    model = AutoModelForSequenceClassification.from_pretrained(args.model_name_or_path, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    columns = ["prompt", "chosen", "rejected"] + (["margin"] if args.use_margin else [])
    dataset = load_dataset("json", data_files=args.pairs_path, split="train").select_columns(columns)
    peft_config = args.peft_config(task_type="SEQ_CLS")
    if peft_config is not None:
        peft_config.modules_to_save = ["score"]  # the new head must train (and be merged) with the adapters
    trainer = RewardTrainer(model=model, args=reward_args, train_dataset=dataset, processing_class=tokenizer,
                            peft_config=peft_config)
    metrics = train_and_publish(trainer, tokenizer, output_dir, stage, args)
    return {"counts": dict(stage.counts), "metrics": metrics}
