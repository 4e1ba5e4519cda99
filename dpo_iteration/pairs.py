"""Build chosen/rejected pairs from scored candidates.

    python dpo_iteration/pairs.py --rewards_path data/runs/demo/iter_1/rewards.jsonl \
        --output_path data/runs/demo/iter_1/pairs.jsonl --min_margin 0.05

--strategy max_min (default: best vs worst), max_random (best vs one drawn at random,
with --seed), max_max (best vs second best) or random (two drawn at random).
"""

from collabloop.cli import record_stage_main, run_main
from dpo_iteration.pairing import STAGE


def main(argv=None):
    record_stage_main(STAGE, __doc__, argv)


if __name__ == "__main__":
    run_main(main)
