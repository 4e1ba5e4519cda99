"""Sample K candidate replies per context with the policy (vLLM offline engine).

    python generation/generate.py --config configs/demo.yaml \
        --contexts_path data/runs/demo/iter_1/contexts.jsonl \
        --output_path data/runs/demo/iter_1/generations.jsonl \
        --model models/SmolLM2-135M-Instruct
"""

from collabloop.cli import end_line, run_main, setup_logging
from collabloop.config import parse_config
from collabloop.console import say
from collabloop.stage_configs import GenerateConfig
from generation.candidates import run


def main(argv=None):
    cfg = parse_config(GenerateConfig, "generate", argv, __doc__)
    setup_logging(cfg.output_path)
    say(end_line("generate", cfg.output_path, run(cfg)))


if __name__ == "__main__":
    run_main(main)
