"""Roll out S simulated futures of w exchanges after every candidate.

The user simulator (any litellm model; by default the local vLLM server that
run_loop.sh starts) plays the user who knows the hidden goal; the policy
(vLLM offline engine in this process) plays the assistant.

    python simulate/simulate_futures.py --config configs/demo.yaml \
        --generations_path data/runs/demo/iter_1/generations.jsonl \
        --output_path data/runs/demo/iter_1/simulations.jsonl
"""

from collabloop.cli import setup_logging
from collabloop.config import parse_config
from collabloop.stage import format_counts
from collabloop.stage_configs import SimulateConfig
from simulate.rollout import run


def main(argv=None):
    cfg = parse_config(SimulateConfig, "simulate", argv, __doc__)
    setup_logging()
    meta = run(cfg)
    if meta is None:
        print(f"[simulate] {cfg.output_path} is up to date; nothing to do")
    else:
        print(format_counts("simulate", meta["counts"]), f"({meta['seconds']:.0f}s)")


if __name__ == "__main__":
    main()
