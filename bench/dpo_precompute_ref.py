"""Benchmark: DPO training with `precompute_ref_log_probs: true` against without, on the same
pairs, the same steps, under the real launcher (accelerate launch, DeepSpeed ZeRO-2, 2
processes on a CPU machine). Prints the ratio of wall times (all measured in this run, on
this machine).

    .venv/bin/python bench/dpo_precompute_ref.py [--pairs 32 --num_train_epochs 1 --max_length 256]

Each run is `accelerate launch ... dpo_iteration/train_preference.py --algorithm dpo` as
run_loop.sh starts it (with --ref_model, the initial model, as run_loop.sh passes it),
timed from launch to exit (wall), with the peak resident memory of its process tree
(the launcher and its ranks, RSS summed, polled every 0.2 s; shared pages are counted
once per process). The trainer's own `train_runtime` (from <output_dir>/train_metrics.json)
covers the training loop only: TRL computes the precomputed reference log-probs in the
trainer's constructor, before the loop, so that pass shows in wall minus train_runtime.
Each run gets a fresh HF_DATASETS_CACHE, because TRL caches precomputed reference
log-probs there by dataset and model and a second run would reuse them. Order: without
first, then with; with --repeats R the order alternates and the seconds are summed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from result_files import save_result  # beside this file

REPO = Path(__file__).resolve().parent.parent
MODEL = str(REPO / "models" / "SmolLM2-135M-Instruct")


class TreeRSS:
    """Polls the summed RSS of a process and all its descendants; keeps the peak."""

    def __init__(self, pid: int, interval_s: float = 0.2):
        self.pid, self.interval_s, self.peak = pid, interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def sample(self) -> int:
        from demo_iteration import tree_rss  # bench/ is on sys.path when a bench script runs

        return tree_rss(self.pid)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.sample())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "TreeRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def synthetic_pairs(n: int) -> list[dict]:
    """n pairs in our Pair format: a correct, explained answer against a vague or wrong one."""
    rows = []
    for i in range(n):
        a, b = 2 + i % 7, 1 + (i * 3) % 5
        question = f"Sam has {a} apples and gets {b} more. How many apples does Sam have now?"
        if i % 3 == 1:
            question = "I need help with a word problem. " + question + " Please show the steps."
        chosen = f"Sam starts with {a} apples and gets {b} more, so {a} + {b} = {a + b}. Sam has {a + b} apples."
        if i % 2:
            chosen += " Would you like me to check it another way, for example by counting up from " + str(a) + "?"
        rejected = ("Apples are a kind of fruit that grows on trees. " * (1 + i % 4)) + f"Maybe {a + b + 1 + i % 3}."
        rows.append({
            "id": f"p{i}/turn0",
            "prompt": [{"role": "user", "content": question}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "chosen_reward": 1.5, "rejected_reward": 0.25, "margin": 1.25,
        })
    return rows


def train_once(args, pairs_path: Path, run_dir: Path, precompute: bool) -> dict:
    output_dir = run_dir / "model"
    accelerate = REPO / ".venv" / "bin" / "accelerate"
    cmd = [str(accelerate) if accelerate.exists() else "accelerate", "launch",
           "--config_file", args.accelerate_config, "--num_processes", str(args.num_processes),
           "dpo_iteration/train_preference.py", "--algorithm", "dpo"]
    if args.config:
        cmd += ["--config", args.config]
    cmd += ["--pairs_path", str(pairs_path), "--model_name_or_path", args.model, "--ref_model", args.model,
            "--output_dir", str(output_dir), "--max_length", str(args.max_length),
            "--per_device_train_batch_size", str(args.per_device_train_batch_size),
            "--gradient_accumulation_steps", "1", "--num_train_epochs", str(args.num_train_epochs),
            "--learning_rate", str(args.learning_rate), "--logging_steps", "1", "--save_strategy", "no",
            "--report_to", "none", "--seed", "0", "--precompute_ref_log_probs", "true" if precompute else "false"]
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", TOKENIZERS_PARALLELISM="false",
               PYTHONUNBUFFERED="1", HF_DATASETS_CACHE=str(run_dir / "hf_datasets"))
    log_path = run_dir / "train.log"
    with open(log_path, "w") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        with TreeRSS(proc.pid) as rss:
            try:
                _, status, usage = os.wait4(proc.pid, 0)  # also the exact peak of its largest single process
            except BaseException:  # stop the launcher and its ranks
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()
                raise
            rc = proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
    if rc != 0:
        sys.stderr.write(log_path.read_text()[-8000:])
        raise SystemExit(f"training (precompute_ref_log_probs={precompute}) failed with exit code {rc}")
    metrics = json.loads((output_dir / "train_metrics.json").read_text())
    final = next((e for e in reversed(metrics.get("log_history", [])) if "train_runtime" in e), {})
    meta = json.loads(output_dir.with_name("model.meta.json").read_text())
    train_runtime = final.get("train_runtime")
    return {
        "wall_s": round(wall, 2),
        "train_runtime_s": round(train_runtime, 2) if train_runtime is not None else None,
        "outside_train_loop_s": round(wall - train_runtime, 2) if train_runtime is not None else None,
        "peak_rss_mib": round(max(rss.peak, usage.ru_maxrss * 1024) / 2**20),
        "largest_process_peak_rss_mib": round(usage.ru_maxrss / 1024),
        "steps": metrics.get("steps"),
        "first_loss": metrics.get("first_loss"),
        "last_loss": metrics.get("last_loss"),
        "world_size": meta.get("counts", {}).get("world_size"),
        "deepspeed_zero_stage": meta.get("counts", {}).get("deepspeed_zero_stage"),
        "precompute_ref_log_probs": meta.get("config", {}).get("precompute_ref_log_probs"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--num_train_epochs", type=float, default=1)
    parser.add_argument("--per_device_train_batch_size", type=int, default=2)
    parser.add_argument("--max_length", type=int, default=256)
    parser.add_argument("--learning_rate", type=float, default=5e-6)
    parser.add_argument("--num_processes", type=int, default=2)
    parser.add_argument("--accelerate_config", default="configs/zero2.yaml")
    parser.add_argument("--config", default="", help="optional run YAML whose dpo: section is read (flags win)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--model", default=MODEL)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench_dpo_"))
    runs: dict[str, list[dict]] = {"without": [], "with": []}
    order = []
    for r in range(args.repeats):
        order += ["without", "with"] if r % 2 == 0 else ["with", "without"]
    try:
        pairs_path = workdir / "pairs.jsonl"
        pairs_path.write_text("".join(json.dumps(p) + "\n" for p in synthetic_pairs(args.pairs)))
        for i, mode in enumerate(order):
            print(f"[{i + 1}/{len(order)}] DPO {mode} precompute_ref_log_probs ...", file=sys.stderr, flush=True)
            run_dir = workdir / f"run{i}_{mode}"
            run_dir.mkdir()
            runs[mode].append(train_once(args, pairs_path, run_dir, precompute=(mode == "with")))
            shutil.rmtree(run_dir, ignore_errors=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    def pooled(mode: str) -> dict:
        rs = runs[mode]
        out = {"runs": rs, "wall_s": round(sum(r["wall_s"] for r in rs), 2),
               "peak_rss_mib": max(r["peak_rss_mib"] for r in rs)}
        if all(r["train_runtime_s"] is not None for r in rs):
            out["train_runtime_s"] = round(sum(r["train_runtime_s"] for r in rs), 2)
            out["outside_train_loop_s"] = round(out["wall_s"] - out["train_runtime_s"], 2)
        return out

    without, with_ = pooled("without"), pooled("with")
    for mode in ("without", "with"):
        for r in runs[mode]:
            if r["precompute_ref_log_probs"] is not (mode == "with"):
                raise SystemExit(f"the {mode} run's saved config has precompute_ref_log_probs="
                                 f"{r['precompute_ref_log_probs']!r}")
    result = {
        "workload": {"pairs": args.pairs, "num_train_epochs": args.num_train_epochs,
                     "per_device_train_batch_size": args.per_device_train_batch_size,
                     "num_processes": args.num_processes, "max_length": args.max_length,
                     "steps_per_run": runs["without"][0]["steps"], "repeats": args.repeats, "order": order},
        "without_precompute": without,
        "with_precompute": with_,
        "wall_ratio_without_vs_with": round(without["wall_s"] / with_["wall_s"], 3),
    }
    if "train_runtime_s" in without and "train_runtime_s" in with_:
        result["train_loop_ratio_without_vs_with"] = round(without["train_runtime_s"] / with_["train_runtime_s"], 3)
        result["outside_loop_extra_s_with_precompute"] = round(
            with_["outside_train_loop_s"] - without["outside_train_loop_s"], 2)
    # At step 0 the policy is the reference: without precompute the first loss is ln 2 exactly (both
    # forwards see the same batch); with it, the reference log-probs come from the up-front pass over other
    # batch layouts, so it differs by the numerics of that (bf16 by TRL's default) and no more.
    result["first_loss"] = {"without": runs["without"][0]["first_loss"], "with": runs["with"][0]["first_loss"],
                            "ln2": 0.693147}
    save_result("dpo_precompute_ref", result)
    line = (f"DPO without precomputed reference log-probs takes {result['wall_ratio_without_vs_with']}x the wall time "
            f"of DPO with them ({without['wall_s']}s vs {with_['wall_s']}s, launch to exit)")
    if "train_loop_ratio_without_vs_with" in result:
        line += (f"; the training loop alone {result['train_loop_ratio_without_vs_with']}x "
                 f"({without['train_runtime_s']}s vs {with_['train_runtime_s']}s), the up-front reference pass and "
                 f"setup add {result['outside_loop_extra_s_with_precompute']}s outside it")
    line += f"; peak RSS {without['peak_rss_mib']} vs {with_['peak_rss_mib']} MiB"
    print(line)


if __name__ == "__main__":
    main()
