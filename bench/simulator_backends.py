"""Benchmark: the in-process simulator (`local/<model>`) against the server path, and against raw vLLM.

The same turn-synchronous futures (`roll_out`) are simulated twice: once with
the user turns served by a vLLM OpenAI server through litellm, once with them
sampled on an engine in this process (the policy's own, as in the demo, where
simulator and policy are the same model). Raw vLLM then samples as many
sequences and tokens in one batch. Prints the ratios, all measured in this run.

    .venv/bin/python bench/simulator_backends.py [--contexts 16 --candidates 2 --futures 2 --window 2]
"""

from __future__ import annotations

import time

from result_files import save_result  # beside this file
from simulate_batching import (  # beside this file
    MODEL,
    free_port,
    generated_tokens,
    raw_sampling,
    workload,
    workload_args,
)  # beside this file

from collabloop.llm_client import Endpoint, LLMClient
from collabloop.local_llm import LocalModel
from collabloop.policy import PolicyEngine, SamplingSettings
from collabloop.rollout import roll_out
from collabloop.server import SimulatorServer


def timed_rollouts(simulator: LLMClient, engine: PolicyEngine, sampling, args, tag: str) -> tuple[float, list]:
    # Warm: first-call costs are not what is compared.
    roll_out(workload(1, 1, 1, f"warm-{tag}"), 1, simulator, engine, sampling, ("warm", tag), "text")
    rollouts = workload(args.contexts, args.candidates, args.futures, tag)
    start = time.perf_counter()
    roll_out(rollouts, args.window, simulator, engine, sampling, (tag,), "text")
    return time.perf_counter() - start, rollouts


def main() -> None:
    args = workload_args(__doc__, contexts=16)

    sampling = SamplingSettings(temperature=0.8, top_p=1.0, max_new_tokens=args.max_new_tokens)
    engine = PolicyEngine(MODEL, seed=0)
    local = LLMClient(Endpoint(f"local/{MODEL}", None, temperature=1.0, max_tokens=args.max_new_tokens),
                      cache=None, local=LocalModel(f"local/{MODEL}"))
    local_s, local_rollouts = timed_rollouts(local, engine, sampling, args, "in_process")
    with SimulatorServer(MODEL, free_port()) as server:
        remote = LLMClient(Endpoint("hosted_vllm/simulator", server.api_base, temperature=1.0,
                                    max_tokens=args.max_new_tokens), cache=None, max_concurrency=64)
        server_s, server_rollouts = timed_rollouts(remote, engine, sampling, args, "server")

    local_tokens = generated_tokens(local_rollouts, engine.tokenizer)
    server_tokens = generated_tokens(server_rollouts, engine.tokenizer)

    # Raw vLLM: as many sequences as conversations, each forced to the in-process run's mean tokens per
    # conversation, in one batch: the ceiling for sampling this many tokens.
    raw_tokens, raw_s = raw_sampling(engine, len(local_rollouts), local_tokens)

    def rate(tokens, seconds):
        return round(tokens / seconds, 1)

    result = {
        "workload": {"conversations": len(local_rollouts), "window_turns": args.window,
                     "max_new_tokens": args.max_new_tokens},
        "in_process": {"seconds": round(local_s, 2), "tokens": local_tokens,
                       "tokens_per_s": rate(local_tokens, local_s)},
        "server": {"seconds": round(server_s, 2), "tokens": server_tokens,
                   "tokens_per_s": rate(server_tokens, server_s)},
        "raw_vllm": {"seconds": round(raw_s, 2), "tokens": raw_tokens, "tokens_per_s": rate(raw_tokens, raw_s)},
    }
    result["in_process_vs_server"] = round(rate(local_tokens, local_s) / rate(server_tokens, server_s), 2)
    result["in_process_vs_raw_vllm"] = round(rate(local_tokens, local_s) / rate(raw_tokens, raw_s), 3)
    save_result("simulator_backends", result)
    print(f"in-process simulation: {result['in_process_vs_server']}x the server path's generated tokens/s, "
          f"{result['in_process_vs_raw_vllm']:.0%} of raw vLLM sampling the same sequences and tokens")


if __name__ == "__main__":
    main()
