"""Build the contexts of an iteration: each task's opening user turn.

Taken from the task when it has a `prompt`, otherwise written by the user
simulator from the hidden goal.

    python simulate/make_contexts.py --config configs/demo.yaml \
        --tasks_path data/tasks/math_demo_train.jsonl \
        --output_path data/runs/demo/iter_1/contexts.jsonl
"""

from collabloop.cli import record_stage_main, run_main
from simulate.openings import STAGE


def main(argv=None):
    record_stage_main(STAGE, __doc__, argv)


if __name__ == "__main__":
    run_main(main)
