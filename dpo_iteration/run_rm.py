"""Train a reward model on preference pairs (TRL RewardTrainer), for Online-RLHF-style annotation.

    accelerate launch --config_file configs/zero2.yaml --num_processes 2 \
        dpo_iteration/run_rm.py --config configs/online_rlhf.yaml \
        --pairs_path data/runs/demo/iter_1/pairs.jsonl \
        --model_name_or_path models/SmolLM2-135M-Instruct --output_dir data/runs/rm/model

The `reward:` section takes any field of TRL's RewardConfig (learning_rate,
center_rewards_coefficient, ...) beside this script's arguments (use_margin, LoRA).
"""

from trl import RewardConfig

from collabloop.cli import run_main, trainer_main
from collabloop.trainer_configs import RewardModelArgs
from dpo_iteration.reward_training import run


def main(argv=None):
    trainer_main("reward", (RewardModelArgs, RewardConfig), run, __doc__, argv)


if __name__ == "__main__":
    run_main(main)
