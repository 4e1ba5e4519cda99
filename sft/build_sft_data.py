"""The SFT recipe: each context's best-scored candidate (optionally with its future) becomes an example.

    python sft/build_sft_data.py --rewards_paths '[data/runs/demo/iter_1/rewards.jsonl]' \
        --output_path data/runs/demo/sft.jsonl --min_reward 1.0
"""

from collabloop.cli import run_main, setup_logging
from collabloop.config import parse_config
from collabloop.stage import format_counts
from collabloop.trainer_configs import SFTDataConfig
from sft.sft_data import build


def main(argv=None):
    cfg = parse_config(SFTDataConfig, "sft_data", argv, __doc__)
    setup_logging()
    print(format_counts("sft_data", build(cfg)))


if __name__ == "__main__":
    run_main(main, is_stage=False)
