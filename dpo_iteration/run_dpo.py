"""DPO on chosen/rejected pairs with TRL, under accelerate and DeepSpeed ZeRO-2.

    accelerate launch --config_file configs/zero2.yaml --num_processes 2 \
        dpo_iteration/run_dpo.py --config configs/demo.yaml \
        --pairs_path data/runs/demo/iter_1/pairs.jsonl \
        --model_name_or_path models/SmolLM2-135M-Instruct \
        --ref_model models/SmolLM2-135M-Instruct \
        --output_dir data/runs/demo/iter_1/model

Every field of TRL's DPOConfig (beta, loss_type, learning_rate, ...) is a key
of the YAML section `dpo:` and a flag here.
"""

from trl import DPOConfig

from collabloop.cli import run_main, setup_logging
from collabloop.config import parse_config
from collabloop.stage import format_counts
from collabloop.stage_configs import DPOScriptArgs
from dpo_iteration.training import machine_defaults, run


def main(argv=None):
    script_args, dpo_args = parse_config(
        (DPOScriptArgs, DPOConfig), "dpo", argv, __doc__, machine_defaults=machine_defaults()
    )
    setup_logging()
    result = run(script_args, dpo_args)
    if result is None:
        print(f"[dpo] {dpo_args.output_dir} is up to date; nothing to do")
    elif dpo_args.process_index == 0:
        print(format_counts("dpo", {**result["counts"], **{k: round(v, 4) if isinstance(v, float) else v
                                                            for k, v in result["metrics"].items()}}))


if __name__ == "__main__":
    run_main(main)
