"""Evaluate a model in full conversations with the simulated user on held-out tasks.

    python simulate/evaluate.py --config configs/demo.yaml --model data/runs/demo/iter_2/model \
        --contexts_path data/runs/demo/eval_contexts.jsonl --iteration 2 \
        --output_dir data/runs/demo/iter_2/eval

Writes <output_dir>/conversations.jsonl (every conversation with its metric
values) and <output_dir>/summary.json (means with bootstrap intervals).
"""

from collabloop.cli import end_line, run_main, setup_logging
from collabloop.config import parse_config
from collabloop.console import say
from collabloop.stage_configs import EvaluateConfig
from simulate.conversations import run


def main(argv=None):
    cfg = parse_config(EvaluateConfig, "evaluate", argv, __doc__)
    setup_logging(f"{cfg.output_dir}/conversations.jsonl")
    result = run(cfg)
    say(end_line("evaluate", f"{cfg.output_dir}/conversations.jsonl", result))
    if cfg.num_shards == 1:  # shards write conversations only; the merge and an unsharded rerun write the summary
        say(f"[evaluate] summary: {cfg.output_dir}/summary.json")


if __name__ == "__main__":
    run_main(main)
