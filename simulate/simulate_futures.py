"""Roll out S simulated futures of w exchanges after every candidate.

The user simulator (any litellm model; by default the local vLLM server that
run_loop.sh starts) plays the user who knows the hidden goal; the policy
(vLLM offline engine in this process) plays the assistant.

    python simulate/simulate_futures.py --config configs/demo.yaml \
        --generations_path data/runs/demo/iter_1/generations.jsonl \
        --output_path data/runs/demo/iter_1/simulations.jsonl
"""

from collabloop.cli import end_line, run_main, setup_logging
from collabloop.config import parse_config
from collabloop.console import say
from collabloop.stage_configs import SimulateConfig
from simulate.futures import run


def main(argv=None):
    cfg = parse_config(SimulateConfig, "simulate", argv, __doc__)
    setup_logging(cfg.output_path)
    say(end_line("simulate", cfg.output_path, run(cfg)))


if __name__ == "__main__":
    run_main(main)
