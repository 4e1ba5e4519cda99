"""Build chosen/rejected pairs from scored candidates.

    python dpo_iteration/pairs.py --rewards_path data/runs/demo/iter_1/rewards.jsonl \
        --output_path data/runs/demo/iter_1/pairs.jsonl --min_margin 0.05

--strategy max_min (default: best vs worst), max_random (best vs one drawn at random,
with --seed), max_max (best vs second best) or random (two drawn at random).
"""

from collabloop.cli import end_line, run_main, setup_logging
from collabloop.config import parse_config
from collabloop.console import say
from collabloop.stage_configs import PairsConfig
from dpo_iteration.pairing import run


def main(argv=None):
    cfg = parse_config(PairsConfig, "pairs", argv, __doc__)
    setup_logging(cfg.output_path)
    say(end_line("pairs", cfg.output_path, run(cfg)))


if __name__ == "__main__":
    run_main(main)
