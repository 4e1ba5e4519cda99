"""Online GRPO whose reward runs the user simulator and the metrics on each sampled reply.

    accelerate launch --config_file configs/zero2.yaml --num_processes 2 \
        dpo_iteration/train_grpo.py --config configs/grpo.yaml \
        --contexts_path data/runs/grpo/iter_1/contexts.jsonl \
        --model_name_or_path models/SmolLM2-135M-Instruct --output_dir data/runs/grpo/iter_1/model

The `grpo:` section takes any field of TRL's GRPOConfig beside this script's
arguments (metric_weights, num_futures, window_turns, the simulator and judge).
"""

from trl import GRPOConfig

from collabloop.cli import run_main, setup_logging, trainer_end_line
from collabloop.config import parse_config
from collabloop.console import say
from collabloop.trainer_configs import GRPOArgs
from collabloop.training import trainer_defaults
from dpo_iteration.grpo import run


def main(argv=None):
    args, grpo_args = parse_config((GRPOArgs, GRPOConfig), "grpo", argv, __doc__, machine_defaults=trainer_defaults())
    setup_logging(grpo_args.output_dir)
    line = trainer_end_line("grpo", grpo_args.output_dir, run(args, grpo_args))
    if line:
        say(line)


if __name__ == "__main__":
    run_main(main)
