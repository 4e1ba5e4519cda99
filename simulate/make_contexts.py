"""Build the contexts of an iteration: each task's opening user turn.

Taken from the task when it has a `prompt`, otherwise written by the user
simulator from the hidden goal.

    python simulate/make_contexts.py --config configs/demo.yaml \
        --tasks_path data/tasks/math_demo_train.jsonl \
        --output_path data/runs/demo/iter_1/contexts.jsonl
"""

from collabloop.cli import end_line, run_main, setup_logging
from collabloop.config import parse_config
from collabloop.console import say
from collabloop.stage_configs import ContextsConfig
from simulate.openings import run


def main(argv=None):
    cfg = parse_config(ContextsConfig, "contexts", argv, __doc__)
    setup_logging(cfg.output_path)
    say(end_line("contexts", cfg.output_path, run(cfg)))


if __name__ == "__main__":
    run_main(main)
