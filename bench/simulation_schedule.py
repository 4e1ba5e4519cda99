"""Benchmark: simulated futures on the per-conversation schedule against the turn-synchronous one, and against raw
vLLM sampling as many sequences and tokens. One run, one machine, the embedded model as policy and as the
in-process simulator (the demo's setup: one engine serves both).

Each schedule plays the same conversations `--repeats` times, alternating, each time from an empty prefix cache;
the fastest of each counts (the machine's other load only ever slows a run). Raw vLLM then samples as many
sequences as there are conversations, each forced to their mean generated tokens, in one batch: the ceiling for
sampling that many tokens. Saves bench/results/simulation_schedule.json; `vs_raw_vllm` and
`vs_turn_synchronous` are ratios of generated tokens per second.

    .venv/bin/python bench/simulation_schedule.py [--contexts 16 --candidates 2 --futures 2 --window 3]
"""

from __future__ import annotations

import argparse
import time

from result_files import save_result  # beside this file
from simulate_batching import MODEL, generated_tokens, raw_sampling, workload  # beside this file

from collabloop.llm_client import Endpoint, LLMClient
from collabloop.local_llm import LocalModel
from collabloop.policy import PolicyEngine, SamplingSettings
from collabloop.rollout import roll_out

SCHEDULES = ("per_conversation", "turn_synchronous")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", type=int, default=16, help="Contexts; each has --candidates candidates.")
    parser.add_argument("--candidates", type=int, default=2)
    parser.add_argument("--futures", type=int, default=2, help="Futures per candidate: a conversation each.")
    parser.add_argument("--window", type=int, default=3, help="Exchanges (user turn, policy turn) per future.")
    parser.add_argument("--max_new_tokens", type=int, default=96, help="Most tokens in a policy turn (the demo's).")
    parser.add_argument("--simulator_max_tokens", type=int, default=48, help="Most tokens in a user turn.")
    parser.add_argument("--simulator_format", default="text", help="'text', 'json' or 'choice'.")
    parser.add_argument("--repeats", type=int, default=2, help="Runs of each schedule; the fastest counts.")
    return parser.parse_args()


def main() -> None:
    args = arguments()
    engine = PolicyEngine(MODEL, seed=0)
    sampling = SamplingSettings(temperature=0.8, top_p=1.0, max_new_tokens=args.max_new_tokens)
    simulator = LLMClient(Endpoint(f"local/{MODEL}", None, temperature=1.0, max_tokens=args.simulator_max_tokens),
                          cache=None, local=LocalModel(f"local/{MODEL}"))

    def play(schedule: str, tag: str, contexts: int) -> tuple[float, list]:
        engine.llm.llm_engine.reset_prefix_cache()  # each run computes its prompts itself
        rollouts = workload(contexts, args.candidates, args.futures, tag)
        start = time.perf_counter()
        roll_out(rollouts, args.window, simulator, engine, sampling, (tag,), args.simulator_format,
                 schedule=schedule)
        return time.perf_counter() - start, rollouts

    for schedule in SCHEDULES:  # first-call costs are not what is compared
        play(schedule, "warm", 1)
    best: dict[str, tuple[float, int]] = {}
    for repeat in range(args.repeats):
        for schedule in SCHEDULES if repeat % 2 == 0 else SCHEDULES[::-1]:
            seconds, rollouts = play(schedule, schedule, args.contexts)  # the same text on every repeat
            tokens = generated_tokens(rollouts, engine.tokenizer)
            if schedule not in best or seconds < best[schedule][0]:
                best[schedule] = (seconds, tokens)
            print(f"{schedule}: {tokens} tokens in {seconds:.1f}s ({tokens / seconds:.1f} tokens/s)")
    conversations = args.contexts * args.candidates * args.futures
    raw_s = float("inf")
    for _ in range(args.repeats):
        raw_tokens, seconds = raw_sampling(engine, conversations, best["per_conversation"][1])
        raw_s = min(raw_s, seconds)

    def rate(seconds: float, tokens: int) -> float:
        return round(tokens / seconds, 1)

    result = {
        "workload": {"conversations": conversations, "window_turns": args.window,
                     "max_new_tokens": args.max_new_tokens, "simulator_max_tokens": args.simulator_max_tokens,
                     "simulator_format": args.simulator_format, "repeats": args.repeats, "dtype": engine.dtype},
        **{schedule: {"seconds": round(s, 2), "tokens": t, "tokens_per_s": rate(s, t)}
           for schedule, (s, t) in best.items()},
        "raw_vllm": {"seconds": round(raw_s, 2), "tokens": raw_tokens, "tokens_per_s": rate(raw_s, raw_tokens)},
    }
    per_conversation = result["per_conversation"]["tokens_per_s"]
    result["vs_turn_synchronous"] = round(per_conversation / result["turn_synchronous"]["tokens_per_s"], 2)
    result["vs_raw_vllm"] = round(per_conversation / result["raw_vllm"]["tokens_per_s"], 3)
    save_result("simulation_schedule", result)
    print(f"per-conversation simulation: {result['vs_turn_synchronous']}x the turn-synchronous path's generated "
          f"tokens/s, {result['vs_raw_vllm']:.0%} of raw vLLM ({result['raw_vllm']['tokens_per_s']} tokens/s) "
          f"sampling as many sequences and tokens")


if __name__ == "__main__":
    main()
