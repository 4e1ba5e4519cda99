"""The preference-optimization family on our pair files: DPO, KTO, CPO, SimPO, ORPO (TRL trainers).

One algorithm is picked by name; its YAML section has the same name and holds
any field of the TRL config class it uses, beside our `PreferenceArgs`.
Values come from: TRL's defaults < this machine < ms-swift's documented
defaults for the algorithm (`ALGORITHMS[...].defaults`) < YAML < command line.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

from collabloop.config import ConfigError
from collabloop.jsonl import read_records, write_records
from collabloop.records import Pair, Rewarded
from collabloop.stage import ModelRun
from collabloop.stage_spec import StageSpec, Where, offline_training, output_of, own_output, policy
from collabloop.trainer_configs import PreferenceArgs
from collabloop.training import ALGORITHMS, copy_unchanged, load_tokenizer, partial_dir_for, train_and_publish

logger = logging.getLogger(__name__)


def apply_rpo_alpha(algorithm: str, args: PreferenceArgs, trl_args) -> None:
    """Translate ms-swift's rpo_alpha into TRL's loss list, refusing settings that contradict it."""
    if args.rpo_alpha is None:
        return
    if algorithm != "dpo":
        raise ConfigError(f"rpo_alpha applies to DPO only; algorithm is {algorithm!r}")
    loss_types = list(trl_args.loss_type)
    if "sft" in loss_types:
        raise ConfigError("set either rpo_alpha or an 'sft' entry in loss_type with loss_weights, not both")
    if trl_args.loss_weights is not None:
        raise ConfigError("rpo_alpha sets loss_weights itself; remove loss_weights or use loss_type/loss_weights alone")
    trl_args.loss_type = [*loss_types, "sft"]
    trl_args.loss_weights = [1.0] * len(loss_types) + [args.rpo_alpha]


def kto_rows(args: PreferenceArgs, counts: Counter) -> list[dict]:
    """Unpaired (prompt, completion, label) rows for KTO, in file order."""
    rows = []
    if args.kto_source == "pairs":
        for pair in read_records(args.pairs_path, Pair):
            rows.append({"prompt": pair.prompt, "completion": pair.chosen, "label": True})
            rows.append({"prompt": pair.prompt, "completion": pair.rejected, "label": False})
        return rows
    if not args.rewards_path:
        raise ConfigError("kto_source 'rewards' needs rewards_path (the iteration's rewards.jsonl)")
    for record in read_records(args.rewards_path, Rewarded):
        scored = [(r, text) for r, text in zip(record.rewards, record.responses) if r is not None]
        counts["kto_candidates_without_reward"] += len(record.responses) - len(scored)
        if len(scored) < 2:
            counts["kto_dropped_too_few_scored"] += len(scored)
            continue
        mean = sum(r for r, _ in scored) / len(scored)
        for reward, text in scored:
            if reward == mean:
                counts["kto_dropped_at_mean"] += 1
                continue
            rows.append({"prompt": record.prompt, "completion": [{"role": "assistant", "content": text}],
                         "label": reward > mean})
    return rows


def reference_copy_needed(uses_reference: bool, args: PreferenceArgs) -> bool:
    """Whether the trainer needs a second model as its reference. Not under LoRA when the reference is the
    model being trained (iteration 1, or loop.reference previous): the policy with its adapter disabled is
    that model, and a copy would cost its whole size again on every GPU (16 GB for an 8B model in bf16)."""
    if not (uses_reference and args.ref_model):
        return False
    same = os.path.realpath(args.ref_model) == os.path.realpath(args.model_name_or_path)
    return not (args.use_peft and same)


def run(algorithm: str, args: PreferenceArgs, trl_args) -> dict | None:
    spec = ALGORITHMS[algorithm]
    output_dir = Path(trl_args.output_dir)
    inputs = {"pairs": args.pairs_path, "model": args.model_name_or_path}
    if algorithm == "kto" and args.kto_source == "rewards":
        inputs = {"rewards": args.rewards_path, "model": args.model_name_or_path}
    if spec.uses_reference and args.ref_model:
        inputs["ref_model"] = args.ref_model
    apply_rpo_alpha(algorithm, args, trl_args)  # first, so the saved config shows the losses really used
    stage = ModelRun(algorithm, output_dir, (args, trl_args), inputs,
                     code=("dpo_iteration.preference", "collabloop.training"))
    if stage.up_to_date():
        return None

    from datasets import load_dataset

    if algorithm == "kto":
        rows = kto_rows(args, stage.counts)
        data_path = output_dir.with_name(output_dir.name + ".kto.jsonl")
        # Every rank writes the same rows atomically; the dataset must be file-backed for multi-process runs.
        write_records(data_path, rows)
        stage.counts["kto_desirable"] = sum(r["label"] for r in rows)
        stage.counts["kto_undesirable"] = sum(not r["label"] for r in rows)
        num_examples, columns = len(rows), ["prompt", "completion", "label"]
    else:
        data_path = Path(args.pairs_path)
        num_examples, columns = len(read_records(args.pairs_path, Pair)), ["prompt", "chosen", "rejected"]
        stage.counts["pairs_in"] = num_examples
    if num_examples == 0:
        metrics = copy_unchanged(args.model_name_or_path, output_dir, stage, f"no examples in {data_path}")
        return {"counts": dict(stage.counts), "metrics": metrics}

    from transformers import AutoModelForCausalLM

    trl_args.output_dir = str(partial_dir_for(output_dir))
    tokenizer = load_tokenizer(args.model_name_or_path)
    model = AutoModelForCausalLM.from_pretrained(args.model_name_or_path)
    extra = {}
    if reference_copy_needed(spec.uses_reference, args):
        extra["ref_model"] = AutoModelForCausalLM.from_pretrained(args.ref_model)
    stage.counts["reference_copies_loaded"] = int("ref_model" in extra)
    dataset = load_dataset("json", data_files=str(data_path), split="train").select_columns(columns)
    trainer = spec.load("trainer_class")(
        model=model, args=trl_args, train_dataset=dataset, processing_class=tokenizer,
        peft_config=args.peft_config(), **extra,
    )
    metrics = train_and_publish(trainer, tokenizer, output_dir, stage, args)
    return {"counts": dict(stage.counts), "metrics": metrics}


def loop_algorithm(w: Where) -> str:
    return w.loop.algorithm


def reference_model(w: Where) -> str:
    """loop.reference: the initial model in every iteration, or the previous iteration's model."""
    return w.policy if w.loop.reference == "previous" else w.loop.initial_model


STAGE = StageSpec(
    "train", "dpo_iteration/train_preference.py", PreferenceArgs, "model", None, run,
    inputs={"algorithm": loop_algorithm, "pairs_path": output_of("pairs"), "rewards_path": output_of("annotate"),
            "model_name_or_path": policy, "ref_model": reference_model, "output_dir": own_output},
    section_is_algorithm=True, runs=offline_training,
)
