"""Preference optimization on chosen/rejected pairs with TRL, under accelerate and DeepSpeed ZeRO-2.

    accelerate launch --config_file configs/zero2.yaml --num_processes 2 \
        dpo_iteration/train_preference.py --algorithm dpo --config configs/demo.yaml \
        --pairs_path data/runs/demo/iter_1/pairs.jsonl \
        --model_name_or_path models/SmolLM2-135M-Instruct \
        --ref_model models/SmolLM2-135M-Instruct \
        --output_dir data/runs/demo/iter_1/model

--algorithm is one of dpo, kto, cpo, simpo, orpo (default dpo). The YAML
section named after it holds any field of the TRL config class it uses
(DPOConfig, KTOConfig, CPOConfig for cpo and simpo, ORPOConfig) beside this
script's own arguments; every key is also a flag here.
"""

import sys
from functools import partial

from collabloop.cli import run_main, trainer_main
from collabloop.config import ConfigError
from collabloop.trainer_configs import PreferenceArgs
from collabloop.training import ALGORITHMS
from dpo_iteration.preference import run


def split_algorithm(argv: list[str]) -> tuple[str, list[str]]:
    """`--algorithm NAME` picks the config class and section, so it is read before everything else."""
    argv = list(argv)
    algorithm = "dpo"
    for i, arg in enumerate(argv):
        if arg == "--algorithm" and i + 1 < len(argv):
            algorithm = argv[i + 1]
            del argv[i : i + 2]
            break
        if arg.startswith("--algorithm="):
            algorithm = arg.split("=", 1)[1]
            del argv[i]
            break
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"--algorithm must be one of {sorted(ALGORITHMS)}, got {algorithm!r}")
    return algorithm, argv


def main(argv=None):
    algorithm, argv = split_algorithm(sys.argv[1:] if argv is None else argv)
    spec = ALGORITHMS[algorithm]
    trainer_main(algorithm, (PreferenceArgs, spec.load("config_class")), partial(run, algorithm), __doc__, argv,
                 defaults=spec.defaults)


if __name__ == "__main__":
    run_main(main)
