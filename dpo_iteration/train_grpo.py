"""Online GRPO whose reward runs the user simulator and the metrics on each sampled reply.

    accelerate launch --config_file configs/zero2.yaml --num_processes 2 \
        dpo_iteration/train_grpo.py --config data/runs/grpo/config.yaml \
        --contexts_path data/runs/grpo/iter_1/contexts.jsonl --tasks_path data/tasks/math_demo_train.jsonl \
        --model_name_or_path models/SmolLM2-135M-Instruct --output_dir data/runs/grpo/iter_1/model

The loop runs it so for `loop.algorithm: grpo`, e.g.
`bash run_loop.sh configs/tiny.yaml --algorithm grpo --run_dir data/runs/grpo`, which
writes data/runs/grpo/config.yaml first; `python -m collabloop.driver run grpo
--run_dir data/runs/grpo --iteration 1` runs this stage alone as the loop does.
--config is optional: no config under configs/ has a `grpo:` section yet, so the
stage's keys come from the defaults or as --key flags (tests/test_grpo.py launches
it with flags only). The `grpo:` section, or the flags, take any field of TRL's
GRPOConfig beside this script's arguments (metric_weights, num_futures,
window_turns, the simulator and judge).
"""

from trl import GRPOConfig

from collabloop.cli import run_main, trainer_main
from collabloop.trainer_configs import GRPOArgs
from dpo_iteration.grpo import run


def main(argv=None):
    trainer_main("grpo", (GRPOArgs, GRPOConfig), run, __doc__, argv)


if __name__ == "__main__":
    run_main(main)
