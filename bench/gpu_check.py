"""The GPU path on one GPU: what bench/gpu_check.sh runs once the environment is ready.

    python bench/gpu_check.py --files bench/gpu_check_files [--steps 20] [--allow_cpu]

1. A random model built from the embedded model's config (its weights do not travel), saved with its
   tokenizer; 64 preference pairs.
2. DPO full fine-tuning, then DPO with LoRA (r 32, as the CollabLLM recipes), each under `accelerate launch`
   with configs/zero2.yaml (DeepSpeed ZeRO-2), bf16 and gradient checkpointing, one rank per visible GPU;
   the reference is the model trained, as in a loop's first iteration: LoRA must load no second copy.
   Then KTO, CPO, SimPO, ORPO and the reward model (RewardTrainer) the same way, fewer steps, and the
   trained reward model scores conversations as annotate does (bf16 on a GPU), batched and one at a time.
3. Where vLLM is installed: the policy's engine and a simulator engine of another model on the one GPU,
   each with its planned share (collabloop/memory_plan.py), then one loop iteration of configs/tiny.yaml.

Figures (seconds, steps/s, peak GPU memory, losses, tokens/s) go to bench/results/gpu_check.json; a part
that fails is recorded with the end of its log, and the others still run. `--allow_cpu`: the same on a
machine without a GPU (2 gloo ranks), to check the script itself.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from result_files import save_result  # noqa: E402  (beside this file)


def build_model(files: Path, out: Path) -> Path:
    """A randomly initialised model of the embedded model's shape (135M parameters), with its tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(files / "model")
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(files / "model").save_pretrained(out)
    for name in ("generation_config.json", "chat_template.jinja"):
        if (files / "model" / name).exists():
            shutil.copy(files / "model" / name, out / name)
    return out


def write_pairs(path: Path, count: int = 64) -> Path:
    rng = random.Random(0)
    with open(path, "w") as f:
        for i in range(count):
            a, b = rng.randint(2, 99), rng.randint(2, 99)
            question = f"Sam has {a} apples and gets {b} more. How many apples does Sam have now?"
            f.write(json.dumps({
                "id": f"p{i}/turn0",
                "prompt": [{"role": "user", "content": question}],
                "chosen": [{"role": "assistant", "content": f"Sam has {a} + {b} = {a + b} apples."}],
                "rejected": [{"role": "assistant", "content": "Apples are a kind of fruit; I cannot say."}],
                "chosen_reward": 1.0, "rejected_reward": 0.0, "margin": 1.0,
            }) + "\n")
    return path


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.splitlines()[-lines:])


def train(name: str, model: Path, pairs: Path, work: Path, steps: int, ranks: int, lora: bool,
          algorithm: str = "dpo") -> dict:
    """One trainer under accelerate + ZeRO-2 in bf16; `algorithm` 'rm' is the reward model's (run_rm.py)."""
    out = work / name / "model"
    script = ["dpo_iteration/run_rm.py"] if algorithm == "rm" else ["dpo_iteration/train_preference.py",
                                                                     "--algorithm", algorithm]
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "configs/zero2.yaml"),
            "--num_processes", str(ranks), str(REPO / script[0]), *script[1:],
            "--pairs_path", str(pairs), "--model_name_or_path", str(model),
            "--output_dir", str(out), "--bf16", "true", "--gradient_checkpointing", "true",
            "--max_steps", str(steps), "--per_device_train_batch_size", "4", "--max_length", "256",
            "--learning_rate", "5e-6", "--logging_steps", "1", "--save_strategy", "no", "--report_to", "none",
            "--seed", "0"]
    if algorithm == "dpo":  # the reference is the model trained, as in a loop's first iteration
        argv += ["--ref_model", str(model)]
    if lora:
        argv += ["--use_peft", "true", "--lora_r", "32", "--lora_alpha", "16", "--lora_dropout", "0.1"]
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - start
    (work / f"{name}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        return {"ok": False, "seconds": round(seconds, 1), "log_tail": tail(done.stdout + done.stderr)}
    counts = json.loads(out.with_name("model.meta.json").read_text())["counts"]
    history = json.loads((out / "train_metrics.json").read_text())["log_history"]
    losses = [e["loss"] for e in history if "loss" in e]
    final = next(e for e in reversed(history) if "train_runtime" in e)
    return {
        "ok": True, "seconds_with_start": round(seconds, 1), "steps": counts.get("train_steps"),
        "steps_per_s": final.get("train_steps_per_second"), "peak_gpu_memory_mib": counts.get("peak_gpu_memory_mib"),
        "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
        "reference_copies_loaded": counts.get("reference_copies_loaded"), "world_size": counts.get("world_size"),
        "deepspeed_zero_stage": counts.get("deepspeed_zero_stage"),
    }


def score_with_reward_model(model: Path) -> dict:
    """RewardModelScorer as annotate uses it ('auto': bf16 on a GPU): batched against one at a time."""
    import torch

    from collabloop.reward_model import RewardModelScorer

    conversations = [[{"role": "user", "content": f"What is {a} + {b}?"},
                      {"role": "assistant", "content": f"It is {a + b + k}."}]
                     for a, b in ((2, 3), (10, 7), (41, 1), (5, 5)) for k in (0, 1)]
    batched = RewardModelScorer(str(model), batch_size=8)
    single = RewardModelScorer(str(model), batch_size=1)
    scores = batched.score(conversations)
    one_at_a_time = [single.score([c])[0] for c in conversations]
    return {"device": batched.device, "dtype": str(batched.model.dtype), "scores": [round(x, 4) for x in scores],
            "max_batched_vs_single_difference": round(max(abs(a - b) for a, b in zip(scores, one_at_a_time)), 5),
            "finite": all(torch.isfinite(torch.tensor(scores)).tolist())}


ENGINES = """
import json, sys, time, torch
from collabloop.llm_client import Endpoint, LLMClient, Request
from collabloop.local_llm import LocalModel
from collabloop.memory_plan import Engine, gpu_memory_gib, plan_engines
from collabloop.policy import PolicyEngine, SamplingSettings
policy_dir, simulator_dir = sys.argv[1:3]
plans = plan_engines([Engine("policy", policy_dir, 0.6, 4096), Engine("local simulator", simulator_dir, 0.3, 4096)],
                     gpu_memory_gib(), "gpu_check")
policy = PolicyEngine(policy_dir, seed=0, max_model_len=4096, gpu_memory_utilization=0.6)
simulator = LLMClient(Endpoint(f"local/{simulator_dir}", None, max_tokens=64),
                      local=LocalModel(f"local/{simulator_dir}", max_model_len=4096, gpu_memory_utilization=0.3))
prompts = [[{"role": "user", "content": f"Count to {i}."}] for i in range(64)]
start = time.perf_counter()
replies = policy.chat(prompts, SamplingSettings(1.0, 1.0, 64), n=1, batch_seed=0, progress=False)
again = policy.chat(prompts, SamplingSettings(1.0, 1.0, 64), n=1, batch_seed=0, progress=False)
turns = simulator.complete_many([Request(messages=p, salt=str(i)) for i, p in enumerate(prompts)])
seconds = time.perf_counter() - start
tokens = sum(len(policy.tokenizer.encode(r[0])) for r in replies + again) + sum(
    len(policy.tokenizer.encode(t.text or "")) for t in turns)
free, total = torch.cuda.mem_get_info()
print("RESULT " + json.dumps({"engines": 2, "planned": [p.line() for p in plans], "tokens": tokens,
      "tokens_per_s": round(tokens / seconds, 1), "seeded_batch_repeats": replies == again,
      "simulator_failures": sum(1 for t in turns if t.error), "gpu_memory_used_gib": round((total - free) / 2**30, 1)}))
"""


def two_engines(model: Path, work: Path) -> dict:
    other = work / "simulator_model"
    shutil.copytree(model, other, dirs_exist_ok=True)  # another folder: its own engine beside the policy's
    done = subprocess.run([sys.executable, "-c", ENGINES, str(model), str(other)], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    (work / "engines.log").write_text(done.stdout + done.stderr)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        return {"ok": False, "log_tail": tail(done.stdout + done.stderr)}
    return {"ok": True, **json.loads(line[len("RESULT "):])}


def loop_iteration(model: Path, work: Path) -> dict:
    run_dir = work / "loop"
    env = {**os.environ, "COLLABLOOP_USE_EXISTING": "1", "COLLABLOOP_VENV": str(Path(sys.executable).parent.parent)}
    start = time.perf_counter()
    done = subprocess.run(["bash", "run_loop.sh", "configs/tiny.yaml", "--run_dir", str(run_dir), "--num_iterations",
                           "1", "--initial_model", str(model), "--simulator_model_path", str(model)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    (work / "loop.log").write_text(done.stdout + done.stderr)
    return {"ok": done.returncode == 0, "seconds": round(time.perf_counter() - start, 1),
            "console_tail": tail(done.stdout + done.stderr, 40)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", default="bench/gpu_check_files", help="what bash bench/gpu_check.sh --prepare made")
    parser.add_argument("--steps", type=int, default=20, help="training steps of each DPO run")
    parser.add_argument("--other_losses", default="kto,cpo,simpo,orpo,rm",
                        help="comma-separated: the other trainers to run (full fine-tuning); '' for none")
    parser.add_argument("--other_steps", type=int, default=8, help="training steps of each of --other_losses")
    parser.add_argument("--work", default="", help="scratch folder (default: a fresh one under /tmp)")
    parser.add_argument("--allow_cpu", action="store_true", help="run on a machine without a GPU (2 gloo ranks)")
    args = parser.parse_args()

    import torch

    gpus = torch.cuda.device_count()
    if not gpus and not args.allow_cpu:
        raise SystemExit("gpu_check: torch sees no GPU (torch.cuda.is_available() is False); --allow_cpu checks the "
                         "script on a CPU")
    if not gpus:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    work = Path(args.work or f"/tmp/collabloop-gpu-check-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    files = (REPO / args.files) if not Path(args.files).is_absolute() else Path(args.files)
    model = build_model(files, work / "random_model")
    pairs = write_pairs(work / "pairs.jsonl")
    ranks = gpus or 2
    result = {
        "machine": {"gpu": torch.cuda.get_device_name(0) if gpus else "none (CPU check)", "gpus": gpus,
                    "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if gpus else 0,
                    "torch": torch.__version__, "python": sys.version.split()[0]},
        "workload": {"model": "random, the embedded model's config (135M parameters)", "pairs": 64,
                     "per_device_batch": 4, "max_length": 256, "steps": args.steps, "ranks": ranks},
    }
    for name, lora in (("dpo_full", False), ("dpo_lora", True)):
        print(f"gpu_check: {name} ({args.steps} steps, {ranks} rank(s), ZeRO-2, bf16, gradient checkpointing)")
        result[name] = train(name, model, pairs, work, args.steps, ranks, lora)
        print(f"  {json.dumps(result[name])[:400]}")
    for algorithm in args.other_losses.split(","):  # the other losses we offer, full fine-tuning, fewer steps
        if not algorithm:
            continue
        name = f"{algorithm}_full"
        print(f"gpu_check: {name} ({args.other_steps} steps)")
        result[name] = train(name, model, pairs, work, args.other_steps, ranks, False, algorithm)
        print(f"  {json.dumps(result[name])[:300]}")
    if result.get("rm_full", {}).get("ok"):
        print("gpu_check: the trained reward model scores conversations on the device")
        result["reward_model_scores"] = score_with_reward_model(work / "rm_full" / "model")
        print(f"  {json.dumps(result['reward_model_scores'])}")
    if gpus and importlib.util.find_spec("vllm") is not None:
        print("gpu_check: two vLLM engines on one GPU")
        result["two_engines"] = two_engines(model, work)
        print(f"  {json.dumps(result['two_engines'])[:400]}")
        if importlib.util.find_spec("litellm") is not None:
            print("gpu_check: one loop iteration of configs/tiny.yaml")
            result["loop_iteration"] = loop_iteration(model, work)
            print(f"  ok={result['loop_iteration']['ok']} in {result['loop_iteration']['seconds']} s")
    else:
        result["two_engines"] = result["loop_iteration"] = "skipped: no GPU or no vLLM here"
    save_result("gpu_check", result)
    print(f"gpu_check: figures in bench/results/gpu_check.json; logs in {work}")


if __name__ == "__main__":
    main()
