"""Supervised fine-tuning on conversations (messages format), loss on assistant turns only.

    accelerate launch --config_file configs/zero2.yaml --num_processes 2 \
        sft/run_sft.py --config configs/demo.yaml --sft_path data/runs/demo/sft.jsonl \
        --model_name_or_path models/SmolLM2-135M-Instruct --output_dir data/runs/sft/model

The `sft:` section takes any field of TRL's SFTConfig beside this script's arguments.
"""

from trl import SFTConfig

from collabloop.cli import run_main, trainer_main
from collabloop.trainer_configs import SFTArgs
from sft.training import run


def main(argv=None):
    trainer_main("sft", (SFTArgs, SFTConfig), run, __doc__, argv)


if __name__ == "__main__":
    run_main(main)
