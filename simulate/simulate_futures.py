"""Roll out S simulated futures of w exchanges after every candidate.

The user simulator (any litellm model; by default the local vLLM server that
run_loop.sh starts) plays the user who knows the hidden goal; the policy
(vLLM offline engine in this process) plays the assistant.

    python simulate/simulate_futures.py --config configs/demo.yaml \
        --generations_path data/runs/demo/iter_1/generations.jsonl \
        --output_path data/runs/demo/iter_1/simulations.jsonl
"""

from collabloop.cli import record_stage_main, run_main
from simulate.futures import STAGE


def main(argv=None):
    record_stage_main(STAGE, __doc__, argv)


if __name__ == "__main__":
    run_main(main)
