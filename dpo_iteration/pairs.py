"""Build chosen/rejected pairs from scored candidates (best against worst).

    python dpo_iteration/pairs.py --rewards_path data/runs/demo/iter_1/rewards.jsonl \
        --output_path data/runs/demo/iter_1/pairs.jsonl --min_margin 0.05
"""

from collabloop.cli import setup_logging
from collabloop.config import parse_config
from collabloop.stage import format_counts
from collabloop.stage_configs import PairsConfig
from dpo_iteration.pairing import run


def main(argv=None):
    cfg = parse_config(PairsConfig, "pairs", argv, __doc__)
    setup_logging()
    meta = run(cfg)
    if meta is None:
        print(f"[pairs] {cfg.output_path} is up to date; nothing to do")
    else:
        print(format_counts("pairs", meta["counts"]), f"({meta['seconds']:.0f}s)")


if __name__ == "__main__":
    main()
