"""Score simulated futures and compute each candidate's multiturn-aware reward.

    python annotate_data/annotate.py --config configs/demo.yaml \
        --simulations_path data/runs/demo/iter_1/simulations.jsonl \
        --output_path data/runs/demo/iter_1/rewards.jsonl \
        --metric_weights '{accuracy: 1, interactivity: 1, token_amount: -1.0e-4}'
"""

from collabloop.cli import setup_logging
from collabloop.config import parse_config
from collabloop.stage import format_counts
from collabloop.stage_configs import AnnotateConfig
from annotate_data.scoring import run


def main(argv=None):
    cfg = parse_config(AnnotateConfig, "annotate", argv, __doc__)
    setup_logging()
    meta = run(cfg)
    if meta is None:
        print(f"[annotate] {cfg.output_path} is up to date; nothing to do")
    else:
        print(format_counts("annotate", meta["counts"]), f"({meta['seconds']:.0f}s)")


if __name__ == "__main__":
    main()
