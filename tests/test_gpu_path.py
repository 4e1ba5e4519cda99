"""The GPU-only branches, checked on a CPU: the trainer configs the recipes build, and the multi-node job."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest
from trl import DPOConfig

from collabloop.config import parse_config
from collabloop.trainer_configs import PreferenceArgs
from collabloop.training import trainer_defaults
from tests.conftest import REPO

RECIPES = ["collabllm_math", "collabllm_math_local", "collabllm_code", "collabllm_docs"]


@pytest.mark.parametrize("recipe", RECIPES)
def test_each_recipe_builds_its_dpo_config(recipe, tmp_path):
    ours, trl_args = parse_config((PreferenceArgs, DPOConfig), "dpo",
                                  ["--config", f"configs/{recipe}.yaml", "--output_dir", str(tmp_path / "model")],
                                  machine_defaults=trainer_defaults())
    # What tests/test_trainers.py runs under ZeRO-2 (test_dpo_with_rpo_alpha_lora_and_precomputed_reference):
    # LoRA, bf16 and gradient checkpointing together.
    assert ours.use_peft and trl_args.bf16 and trl_args.gradient_checkpointing
    lora = ours.peft_config()
    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (32, 16, 0.1) and lora.target_modules == "all-linear"
    assert trl_args.loss_type == ["sigmoid"] and trl_args.beta == 0.1 and trl_args.learning_rate == 5e-6
    assert trl_args.max_length == 4096 and trl_args.warmup_steps == 0.1


def test_the_multinode_job_trains_the_policy_against_itself_unless_told(tmp_path):
    """examples/slurm/train_multinode.sbatch, with stand-ins for the cluster's srun and scontrol that print
    the command each node would run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("srun", 'echo "srun $*"'), ("scontrol", "echo node-a; echo node-b")):
        (bin_dir / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "node-[a-b]",
           "SLURM_GPUS_ON_NODE": "4", "CONFIG": "configs/collabllm_math.yaml", "ITER": "run/iter_1",
           "POLICY": "models/Llama-3.1-8B-Instruct"}

    def job(**extra) -> str:
        done = subprocess.run(["bash", "examples/slurm/train_multinode.sbatch"], cwd=REPO, env={**env, **extra},
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    command = job()
    assert "--ref_model models/Llama-3.1-8B-Instruct" in command  # not the embedded model's vocabulary
    assert "--config configs/collabllm_math.yaml" in command and "SLURM_NNODES * 4" in command
    assert "--main_process_ip node-a" in command
    assert "--ref_model models/initial" in job(REF="models/initial")
    missing = subprocess.run(["bash", "examples/slurm/train_multinode.sbatch"], cwd=REPO,
                             env={k: v for k, v in env.items() if k != "CONFIG"}, capture_output=True, text=True)
    assert missing.returncode != 0 and "set CONFIG to the run YAML" in missing.stderr
