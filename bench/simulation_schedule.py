"""Benchmark: simulated futures on the per-conversation schedule against the turn-synchronous one, and against raw
vLLM sampling as many sequences and tokens. One run, one machine, the embedded model as policy and as the
in-process simulator (the demo's setup: one engine serves both).

Each schedule plays the same conversations `--repeats` times, alternating, each time from an empty prefix cache;
the fastest of each counts (the machine's other load only ever slows a run). Raw vLLM then samples as many
sequences as there are conversations, each forced to their mean generated tokens, in one batch: the ceiling for
sampling that many tokens. Saves bench/results/simulation_schedule.json; `vs_raw_vllm` and
`vs_turn_synchronous` are ratios of generated tokens per second.

Beside each time, what the engine computed: its steps, and the tokens it ran through the model (prompt tokens
not read from the prefix cache, plus one per sequence per step), with the longest conversation's generated
tokens. No schedule takes fewer steps than the longest conversation has tokens (its turns run one after
another), and a conversation's turns must read the other role's words, which raw sampling never does: these
two say how near the ceiling a schedule can come on this model.

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


class EngineWork:
    """Counts the steps of an in-process vLLM engine that computed anything, and the tokens they computed, by
    wrapping its scheduler's `schedule` (the engine core is in this process: VLLM_ENABLE_V1_MULTIPROCESSING=0)."""

    def __init__(self, llm):
        scheduler = llm.llm_engine.engine_core.engine_core.scheduler
        schedule = scheduler.schedule
        self.steps = self.tokens = 0

        def counted(*args, **kwargs):
            out = schedule(*args, **kwargs)
            if out.total_num_scheduled_tokens:
                self.steps += 1
                self.tokens += out.total_num_scheduled_tokens
            return out

        scheduler.schedule = counted

    def since(self, start: tuple[int, int]) -> dict:
        return {"engine_steps": self.steps - start[0], "tokens_computed": self.tokens - start[1]}

    def mark(self) -> tuple[int, int]:
        return self.steps, self.tokens


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


def rate(seconds: float, tokens: int) -> float:
    return round(tokens / seconds, 1)


def main() -> None:
    args = arguments()
    engine = PolicyEngine(MODEL, seed=0)
    sampling = SamplingSettings(temperature=0.8, top_p=1.0, max_new_tokens=args.max_new_tokens)
    simulator = LLMClient(Endpoint(f"local/{MODEL}", None, temperature=1.0, max_tokens=args.simulator_max_tokens),
                          cache=None, local=LocalModel(f"local/{MODEL}"))

    work = EngineWork(engine.llm)  # the simulator's engine is this one (same model, same process)

    def play(schedule: str, tag: str, contexts: int) -> tuple[float, list, dict]:
        engine.llm.llm_engine.reset_prefix_cache()  # each run computes its prompts itself
        rollouts = workload(contexts, args.candidates, args.futures, tag)
        start, counted = time.perf_counter(), work.mark()
        roll_out(rollouts, args.window, simulator, engine, sampling, (tag,), args.simulator_format,
                 schedule=schedule)
        return time.perf_counter() - start, rollouts, work.since(counted)

    for schedule in SCHEDULES:  # first-call costs are not what is compared
        play(schedule, "warm", 1)
    best: dict[str, dict] = {}
    for repeat in range(args.repeats):
        for schedule in SCHEDULES if repeat % 2 == 0 else SCHEDULES[::-1]:
            seconds, rollouts, computed = play(schedule, schedule, args.contexts)  # the same text every repeat
            tokens = generated_tokens(rollouts, engine.tokenizer)
            if schedule not in best or seconds < best[schedule]["seconds"]:
                longest = max(generated_tokens([r], engine.tokenizer) for r in rollouts)
                best[schedule] = {"seconds": round(seconds, 2), "tokens": tokens, "tokens_per_s": rate(seconds, tokens),
                                  **computed, "longest_conversation_tokens": longest}
            print(f"{schedule}: {tokens} tokens in {seconds:.1f}s ({tokens / seconds:.1f} tokens/s); {computed}")
    conversations = args.contexts * args.candidates * args.futures
    raw: dict = {}
    for _ in range(args.repeats):
        counted = work.mark()
        raw_tokens, seconds = raw_sampling(engine, conversations, best["per_conversation"]["tokens"])
        if not raw or seconds < raw["seconds"]:
            raw = {"seconds": round(seconds, 2), "tokens": raw_tokens, "tokens_per_s": rate(seconds, raw_tokens),
                   **work.since(counted)}

    result = {
        "workload": {"conversations": conversations, "window_turns": args.window,
                     "max_new_tokens": args.max_new_tokens, "simulator_max_tokens": args.simulator_max_tokens,
                     "simulator_format": args.simulator_format, "repeats": args.repeats, "dtype": engine.dtype},
        **best,
        "raw_vllm": raw,
    }
    per_conversation = result["per_conversation"]["tokens_per_s"]
    result["vs_turn_synchronous"] = round(per_conversation / result["turn_synchronous"]["tokens_per_s"], 2)
    result["vs_raw_vllm"] = round(per_conversation / result["raw_vllm"]["tokens_per_s"], 3)
    save_result("simulation_schedule", result)
    print(f"per-conversation simulation: {result['vs_turn_synchronous']}x the turn-synchronous path's generated "
          f"tokens/s, {result['vs_raw_vllm']:.0%} of raw vLLM ({result['raw_vllm']['tokens_per_s']} tokens/s) "
          f"sampling as many sequences and tokens")
    steps = {name: result[name]["engine_steps"] for name in (*SCHEDULES, "raw_vllm")}
    computed = {name: result[name]["tokens_computed"] for name in (*SCHEDULES, "raw_vllm")}
    print(f"engine steps {steps} (the longest conversation generated "
          f"{result['per_conversation']['longest_conversation_tokens']} tokens); tokens computed {computed}")


if __name__ == "__main__":
    main()
