"""Supervised fine-tuning on conversations (messages format), loss on assistant turns only.

    accelerate launch --config_file configs/zero2.yaml --num_processes 2 \
        sft/run_sft.py --config configs/demo.yaml --sft_path data/runs/demo/sft.jsonl \
        --model_name_or_path models/SmolLM2-135M-Instruct --output_dir data/runs/sft/model

The `sft:` section takes any field of TRL's SFTConfig beside this script's arguments.
"""

from trl import SFTConfig

from collabloop.cli import run_main, setup_logging, trainer_end_line
from collabloop.config import parse_config
from collabloop.console import say
from collabloop.trainer_configs import SFTArgs
from collabloop.training import trainer_defaults
from sft.training import run


def main(argv=None):
    args, sft_args = parse_config((SFTArgs, SFTConfig), "sft", argv, __doc__, machine_defaults=trainer_defaults())
    setup_logging(sft_args.output_dir)
    line = trainer_end_line("sft", sft_args.output_dir, run(args, sft_args))
    if line:
        say(line)


if __name__ == "__main__":
    run_main(main)
