"""Score simulated futures and compute each candidate's multiturn-aware reward.

    python annotate_data/annotate.py --config configs/demo.yaml \
        --simulations_path data/runs/demo/iter_1/simulations.jsonl \
        --output_path data/runs/demo/iter_1/rewards.jsonl \
        --metric_weights '{accuracy: 1, interactivity: 1, token_amount: -1.0e-4}'
"""

from annotate_data.scoring import STAGE
from collabloop.cli import record_stage_main, run_main


def main(argv=None):
    record_stage_main(STAGE, __doc__, argv)


if __name__ == "__main__":
    run_main(main)
