"""Online GRPO whose reward runs the user simulator and the metrics on each sampled reply.

    accelerate launch --config_file configs/zero2.yaml --num_processes 2 \
        dpo_iteration/train_grpo.py --config configs/grpo.yaml \
        --contexts_path data/runs/grpo/iter_1/contexts.jsonl \
        --model_name_or_path models/SmolLM2-135M-Instruct --output_dir data/runs/grpo/iter_1/model

The `grpo:` section takes any field of TRL's GRPOConfig beside this script's
arguments (metric_weights, num_futures, window_turns, the simulator and judge).
"""

from trl import GRPOConfig

from collabloop.cli import run_main, trainer_main
from collabloop.trainer_configs import GRPOArgs
from dpo_iteration.grpo import run


def main(argv=None):
    trainer_main("grpo", (GRPOArgs, GRPOConfig), run, __doc__, argv)


if __name__ == "__main__":
    run_main(main)
