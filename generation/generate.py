"""Sample K candidate replies per context with the policy (vLLM offline engine).

    python generation/generate.py --config configs/demo.yaml \
        --contexts_path data/runs/demo/iter_1/contexts.jsonl \
        --output_path data/runs/demo/iter_1/generations.jsonl \
        --model models/SmolLM2-135M-Instruct
"""

from collabloop.cli import record_stage_main, run_main
from generation.candidates import STAGE


def main(argv=None):
    record_stage_main(STAGE, __doc__, argv)


if __name__ == "__main__":
    run_main(main)
