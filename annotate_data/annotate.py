"""Score simulated futures and compute each candidate's multiturn-aware reward.

    python annotate_data/annotate.py --config configs/demo.yaml \
        --simulations_path data/runs/demo/iter_1/simulations.jsonl \
        --output_path data/runs/demo/iter_1/rewards.jsonl \
        --metric_weights '{accuracy: 1, interactivity: 1, token_amount: -1.0e-4}'
"""

from annotate_data.scoring import run
from collabloop.cli import end_line, run_main, setup_logging
from collabloop.config import parse_config
from collabloop.console import say
from collabloop.stage_configs import AnnotateConfig


def main(argv=None):
    cfg = parse_config(AnnotateConfig, "annotate", argv, __doc__)
    setup_logging(cfg.output_path)
    say(end_line("annotate", cfg.output_path, run(cfg)))


if __name__ == "__main__":
    run_main(main)
