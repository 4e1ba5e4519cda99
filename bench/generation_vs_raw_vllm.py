"""Benchmark: the generation stage (generation/candidates.py, what generation/generate.py runs)
against raw vLLM on the same prompts with the same engine settings. Prints the ratio of
generated tokens per second (all measured in this run, on this machine).

    .venv/bin/python bench/generation_vs_raw_vllm.py [--contexts 64 --num_candidates 4 --max_new_tokens 128]

Each side runs in its own fresh Python process, so neither finds a warm engine:
- stage: `generation.candidates.run(GenerateConfig(...))` on a contexts.jsonl written
  here: engine start, chunks of --batch_size contexts per engine call, partial and
  final JSONL and meta written;
- raw: `vllm.LLM(...)` with the settings the stage's PolicyEngine uses (after
  collabloop.policy.configure_vllm_env) and one `llm.chat(prompts, SamplingParams(n=K))`.

Both are timed from just before the engine is built to the end (stage: `run()`
returned, output written; raw: `chat()` returned); `import vllm` is done before
the clock starts in both. The engine start is also timed separately in both
(stage: a subclass of PolicyEngine that only times its constructor and calls),
so ratios are given including and excluding it. Sampled lengths vary (the
stage has no ignore_eos), so the headline compares generated tokens per second;
tokens are counted from the output texts with the model's tokenizer, the same
way for both. Order: raw first, then stage; with --repeats R the order
alternates (raw, stage, stage, raw, ...) and the seconds and tokens are pooled.
The raw side reseeds torch as the stage does for its first chunk, so with
--batch_size >= --contexts both sample the same texts (reported as a check).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from result_files import save_result  # beside this file

REPO = Path(__file__).resolve().parent.parent
MODEL = str(REPO / "models" / "SmolLM2-135M-Instruct")

SUBJECTS = ["apples", "marbles", "books", "pencils", "stickers", "cookies", "coins", "shells"]
NAMES = ["Sam", "Ana", "Lee", "Maya", "Omar", "Zoe", "Ivan", "Nia"]


def synthetic_prompts(n: int) -> list[list[dict]]:
    """n user openings of varied length: word problems, some with a request for detail."""
    prompts = []
    for i in range(n):
        name, thing = NAMES[i % len(NAMES)], SUBJECTS[(i // len(NAMES)) % len(SUBJECTS)]
        a, b = 2 + i % 7, 1 + (i * 3) % 5
        text = f"{name} has {a} {thing} and gets {b} more."
        if i % 3 == 1:
            text += f" Then {name} gives {min(a, 2)} {thing} to a friend."
        text += f" How many {thing} does {name} have now?"
        if i % 4 == 2:
            text += " Please explain each step, and check the answer another way."
        if i % 5 == 3:
            text = "I need help with my homework. " + text + " I am not sure how to start."
        prompts.append([{"role": "user", "content": text}])
    return prompts


def write_contexts(path: Path, prompts: list[list[dict]]) -> None:
    from collabloop.jsonl import dumps

    path.write_text("".join(dumps({"id": f"b{i}/turn0", "task_id": f"b{i}", "prompt": p, "turn": 0}) + "\n"
                            for i, p in enumerate(prompts)))


# ---------------------------------------------------------------- workers (fresh processes)


def worker_stage(spec: dict) -> dict:
    from collabloop.policy import configure_vllm_env

    configure_vllm_env(spec["kv_cache_gib"])
    import torch  # noqa: F401
    import vllm  # noqa: F401

    import collabloop.policy as policy
    import generation.candidates as candidates
    from collabloop.stage_configs import GenerateConfig

    timings = {"engine_start_s": 0.0, "engine_calls": 0, "engine_call_s": 0.0}

    class TimedPolicyEngine(policy.PolicyEngine):
        """The real engine; only times its constructor and its calls."""

        def __init__(self, *args, **kwargs):
            start = time.perf_counter()
            super().__init__(*args, **kwargs)
            timings["engine_start_s"] += time.perf_counter() - start

        def chat(self, *args, **kwargs):
            start = time.perf_counter()
            try:
                return super().chat(*args, **kwargs)
            finally:
                timings["engine_calls"] += 1
                timings["engine_call_s"] += time.perf_counter() - start

    policy.PolicyEngine = TimedPolicyEngine  # what the stage's policy_engine() makes
    cfg = GenerateConfig(
        model=spec["model"], contexts_path=spec["contexts_path"], output_path=spec["output_path"],
        num_candidates=spec["n"], temperature=spec["temperature"], top_p=spec["top_p"],
        max_new_tokens=spec["max_new_tokens"], seed=spec["seed"], dtype=spec["dtype"],
        max_model_len=spec["max_model_len"], kv_cache_gib=spec["kv_cache_gib"], enforce_eager=spec["enforce_eager"],
        batch_size=spec["batch_size"],
    )
    start = time.perf_counter()
    meta = candidates.run(cfg)
    total = time.perf_counter() - start
    if meta is None:
        raise SystemExit(f"the stage found {spec['output_path']} up to date; the benchmark needs a fresh output")
    if timings["engine_calls"] == 0:
        raise SystemExit("the stage's engine was not timed: generation.candidates no longer builds its engine as "
                         "PolicyEngine; update this benchmark's TimedPolicyEngine")
    texts = [json.loads(line)["responses"] for line in Path(spec["output_path"]).read_text().splitlines() if line]
    return {"total_s": total, **timings, "texts": texts, "stage_counts": meta.get("counts", {})}


def worker_raw(spec: dict) -> dict:
    from collabloop.policy import configure_vllm_env, derive_seed

    configure_vllm_env(spec["kv_cache_gib"])
    import torch
    from vllm import LLM, SamplingParams

    prompts = [json.loads(line)["prompt"] for line in Path(spec["contexts_path"]).read_text().splitlines() if line]
    from collabloop.policy import resolve_dtype

    dtype = resolve_dtype(spec["dtype"])  # as PolicyEngine resolves it
    start = time.perf_counter()
    llm = LLM(model=spec["model"], seed=spec["seed"], dtype=dtype, max_model_len=spec["max_model_len"],
              enable_prefix_caching=True, enforce_eager=spec["enforce_eager"])
    engine_s = time.perf_counter() - start
    params = SamplingParams(n=spec["n"], temperature=spec["temperature"], top_p=spec["top_p"],
                            max_tokens=spec["max_new_tokens"])
    torch.manual_seed(derive_seed(spec["seed"], 0))  # as the stage seeds its first engine batch
    call_start = time.perf_counter()
    outputs = llm.chat(prompts, params)
    end = time.perf_counter()
    texts = [[o.text for o in out.outputs] for out in outputs]
    engine_token_ids = sum(len(o.token_ids) for out in outputs for o in out.outputs)
    return {"total_s": end - start, "engine_start_s": engine_s, "engine_calls": 1, "engine_call_s": end - call_start,
            "texts": texts, "engine_token_ids": engine_token_ids}


# ---------------------------------------------------------------- driver


def run_worker(side: str, spec: dict, workdir: Path) -> dict:
    spec_path, result_path = workdir / f"{side}.spec.json", workdir / f"{side}.result.json"
    spec_path.write_text(json.dumps(spec))
    result_path.unlink(missing_ok=True)
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", TOKENIZERS_PARALLELISM="false")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_worker", side, "--_spec", str(spec_path),
                           "--_result", str(result_path)], cwd=REPO, env=env, capture_output=True, text=True)
    process_s = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"{side} worker failed with exit code {proc.returncode}")
    result = json.loads(result_path.read_text())
    result["process_s"] = process_s  # interpreter start, imports and exit included
    return result


def count_tokens(texts: list[list[str]], tokenizer) -> int:
    return sum(len(tokenizer.encode(t, add_special_tokens=False)) for per in texts for t in per)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", type=int, default=64, help="synthetic user prompts")
    parser.add_argument("--num_candidates", type=int, default=4, help="n: replies per prompt (K)")
    parser.add_argument("--max_new_tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top_p", type=float, default=1.0)
    parser.add_argument("--batch_size", type=int, default=64, help="the stage's contexts per engine call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--max_model_len", type=int, default=2048)
    parser.add_argument("--kv_cache_gib", type=int, default=1)
    parser.add_argument("--enforce_eager", type=int, default=1, choices=[0, 1])
    parser.add_argument("--repeats", type=int, default=1, help="runs per side, order alternating (ABBA...)")
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--_worker", choices=["stage", "raw"], help=argparse.SUPPRESS)
    parser.add_argument("--_spec", help=argparse.SUPPRESS)
    parser.add_argument("--_result", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._worker:
        spec = json.loads(Path(args._spec).read_text())
        result = (worker_stage if args._worker == "stage" else worker_raw)(spec)
        Path(args._result).write_text(json.dumps(result))
        return

    workdir = Path(tempfile.mkdtemp(prefix="bench_generation_"))
    try:
        contexts_path = workdir / "contexts.jsonl"
        write_contexts(contexts_path, synthetic_prompts(args.contexts))
        base = {
            "model": args.model, "contexts_path": str(contexts_path), "n": args.num_candidates,
            "temperature": args.temperature, "top_p": args.top_p, "max_new_tokens": args.max_new_tokens,
            "seed": args.seed, "dtype": args.dtype, "max_model_len": args.max_model_len,
            "kv_cache_gib": args.kv_cache_gib, "enforce_eager": bool(args.enforce_eager),
            "batch_size": args.batch_size,
        }
        order = []
        for r in range(args.repeats):
            order += ["raw", "stage"] if r % 2 == 0 else ["stage", "raw"]
        runs: dict[str, list[dict]] = {"raw": [], "stage": []}
        for i, side in enumerate(order):
            spec = dict(base, output_path=str(workdir / f"run{i}" / "generations.jsonl"))
            Path(spec["output_path"]).parent.mkdir()
            print(f"[{i + 1}/{len(order)}] {side} ...", file=sys.stderr, flush=True)
            runs[side].append(run_worker(side, spec, workdir))
            shutil.rmtree(Path(spec["output_path"]).parent)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    sides = {}
    for side, results in runs.items():
        tokens = sum(count_tokens(r["texts"], tokenizer) for r in results)
        total = sum(r["total_s"] for r in results)
        engine = sum(r["engine_start_s"] for r in results)
        sides[side] = {
            "runs": [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()
                      if k not in ("texts", "stage_counts")} for r in results],
            "tokens": tokens,
            "responses": sum(len(per) for r in results for per in r["texts"]),
            "seconds": round(total, 2),
            "engine_start_s": round(engine, 2),
            "seconds_excluding_engine_start": round(total - engine, 2),
            "tokens_per_s": round(tokens / total, 1),
            "tokens_per_s_excluding_engine_start": round(tokens / (total - engine), 1),
        }
    first_raw, first_stage = runs["raw"][0]["texts"], runs["stage"][0]["texts"]
    same = sum(a == b for a, b in zip(first_raw, first_stage))
    stage, raw = sides["stage"], sides["raw"]
    result = {
        "workload": {"contexts": args.contexts, "num_candidates": args.num_candidates,
                     "max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p,
                     "batch_size": args.batch_size,
                     "stage_engine_calls": -(-args.contexts // args.batch_size),
                     "dtype": args.dtype, "max_model_len": args.max_model_len,
                     "enforce_eager": bool(args.enforce_eager),
                     "repeats": args.repeats, "order": order},
        "stage": stage,
        "raw_vllm": raw,
        # Only comparable when the stage makes one engine call (its first chunk is seeded as the raw call).
        "contexts_with_identical_outputs": f"{same}/{len(first_raw)}" if args.batch_size >= args.contexts else None,
        "throughput_ratio_stage_vs_raw": round(stage["tokens_per_s"] / raw["tokens_per_s"], 3),
        "throughput_ratio_excluding_engine_start": round(
            stage["tokens_per_s_excluding_engine_start"] / raw["tokens_per_s_excluding_engine_start"], 3),
        "wall_ratio_stage_vs_raw": round(stage["seconds"] / raw["seconds"], 3),
        "wall_ratio_excluding_engine_start": round(
            stage["seconds_excluding_engine_start"] / raw["seconds_excluding_engine_start"], 3),
    }
    save_result("generation_vs_raw_vllm", result)
    print(f"the generation stage reaches {result['throughput_ratio_stage_vs_raw']:.1%} of raw vLLM's generated "
          f"tokens per second including engine start ({stage['tokens_per_s']} vs {raw['tokens_per_s']} tokens/s; "
          f"wall {stage['seconds']}s vs {raw['seconds']}s) and "
          f"{result['throughput_ratio_excluding_engine_start']:.1%} excluding it"
          + (f"; {same}/{len(first_raw)} contexts got identical samples" if args.batch_size >= args.contexts else ""))


if __name__ == "__main__":
    main()
