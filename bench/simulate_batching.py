"""Benchmark: turn-synchronous batched simulation against one-conversation-at-a-time
rollouts on the same workload, and against raw vLLM generation of the same
number of tokens. Prints the ratios (all measured in this run, on this machine).

    .venv/bin/python bench/simulate_batching.py [--contexts 8 --candidates 2 --futures 2 --window 2]

Starts its own simulator server (the embedded model) on a free port; no cache,
so every call is real.
"""

from __future__ import annotations

import argparse
import socket
import time

from result_files import save_result  # beside this file

from collabloop.llm_client import Endpoint, LLMClient
from collabloop.policy import PolicyEngine, SamplingSettings
from collabloop.records import Task
from collabloop.rollout import Rollout, roll_out
from collabloop.server import SimulatorServer

MODEL = "models/SmolLM2-135M-Instruct"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def workload(num_contexts: int, num_candidates: int, num_futures: int, tag: str) -> list[Rollout]:
    rollouts = []
    for i in range(num_contexts):
        a, b = 2 + i % 4, 1 + i % 3
        question = f"Sam has {a} apples and gets {b} more. How many apples does Sam have now?"
        task = Task(id=f"b{i}", task="math", goal=f"You want to know: {question}", reference=str(a + b))
        for k in range(num_candidates):
            candidate = f"Could you tell me whether Sam ate any apples? Otherwise it is {a + b + k}."
            for s in range(num_futures):
                rollouts.append(Rollout(task=task, salt=f"{tag}/{i}/{k}/{s}",
                                        history=[{"role": "user", "content": question},
                                                 {"role": "assistant", "content": candidate}]))
    return rollouts


def generated_tokens(rollouts: list[Rollout], tokenizer) -> int:
    return sum(len(tokenizer.encode(m["content"], add_special_tokens=False)) for r in rollouts for m in r.future)


def workload_args(doc: str, contexts: int) -> argparse.Namespace:
    """The futures workload of the simulation benchmarks, from the command line."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", type=int, default=contexts)
    parser.add_argument("--candidates", type=int, default=2)
    parser.add_argument("--futures", type=int, default=2)
    parser.add_argument("--window", type=int, default=2)
    parser.add_argument("--max_new_tokens", type=int, default=64)
    return parser.parse_args()


def raw_sampling(engine: PolicyEngine, num_sequences: int, total_tokens: int) -> tuple[int, float]:
    """The baseline: `num_sequences` sequences in one batch, each forced to its share of `total_tokens`;
    returns (tokens sampled, seconds)."""
    from vllm import SamplingParams

    per_sequence = max(1, total_tokens // num_sequences)
    prompts = [[{"role": "user", "content": f"Count to ten, number {i}."}] for i in range(num_sequences)]
    params = SamplingParams(temperature=0.8, max_tokens=per_sequence, min_tokens=per_sequence, ignore_eos=True)
    start = time.perf_counter()
    engine.llm.chat(prompts, params, use_tqdm=False)
    return per_sequence * num_sequences, time.perf_counter() - start


def main() -> None:
    args = workload_args(__doc__, contexts=8)

    sampling = SamplingSettings(temperature=0.8, top_p=1.0, max_new_tokens=args.max_new_tokens)
    engine = PolicyEngine(MODEL, seed=0)
    with SimulatorServer(MODEL, free_port()) as server:
        endpoint = Endpoint("hosted_vllm/simulator", server.api_base, temperature=1.0, max_tokens=args.max_new_tokens)
        simulator = LLMClient(endpoint, cache=None, max_concurrency=64)
        # Warm both engines so neither mode pays first-call costs.
        roll_out(workload(1, 1, 1, "warm"), 1, simulator, engine, sampling, ("warm",), "text")

        batched = workload(args.contexts, args.candidates, args.futures, "batched")
        start = time.perf_counter()
        roll_out(batched, args.window, simulator, engine, sampling, ("batched",), "text")
        batched_s = time.perf_counter() - start

        single = workload(args.contexts, args.candidates, args.futures, "single")
        start = time.perf_counter()
        for i, rollout in enumerate(single):
            roll_out([rollout], args.window, simulator, engine, sampling, ("single", i), "text")
        single_s = time.perf_counter() - start

    tokenizer = engine.tokenizer
    batched_tokens = generated_tokens(batched, tokenizer)
    single_tokens = generated_tokens(single, tokenizer)

    # Raw vLLM: the same number of tokens as the batched run generated, in one batch
    # of as many sequences, forced to full length.
    raw_tokens, raw_s = raw_sampling(engine, len(batched), batched_tokens)

    result = {
        "workload": {"conversations": len(batched), "window_turns": args.window,
                     "max_new_tokens": args.max_new_tokens},
        "batched": {"seconds": round(batched_s, 2), "tokens": batched_tokens,
                    "tokens_per_s": round(batched_tokens / batched_s, 1)},
        "one_at_a_time": {"seconds": round(single_s, 2), "tokens": single_tokens,
                          "tokens_per_s": round(single_tokens / single_s, 1)},
        "raw_vllm": {"seconds": round(raw_s, 2), "tokens": raw_tokens, "tokens_per_s": round(raw_tokens / raw_s, 1)},
    }
    result["speedup_batched_vs_one_at_a_time"] = round(
        (batched_tokens / batched_s) / (single_tokens / single_s), 2)
    result["batched_throughput_vs_raw_vllm"] = round((batched_tokens / batched_s) / (raw_tokens / raw_s), 3)
    save_result("simulate_batching", result)
    print(f"batched simulation is {result['speedup_batched_vs_one_at_a_time']}x faster per generated token "
          f"than one-at-a-time rollouts (wall time {single_s:.1f}s vs {batched_s:.1f}s), and reaches "
          f"{result['batched_throughput_vs_raw_vllm']:.0%} of raw vLLM token throughput")


if __name__ == "__main__":
    main()
