"""Benchmark: batched reward-model scoring (conversations sorted by length, padded batches)
against one-at-a-time scoring (Online-RLHF's way) of the same conversations, with the
project's scorer (collabloop.reward_model.RewardModelScorer). Prints the speedup and the
largest difference between the two sets of scores (all measured in this run, on this machine).

    .venv/bin/python bench/reward_model_batching.py [--conversations 64 --batch_size 16]

The reward model is the embedded model with a seeded, untrained one-label score
head (as tests/test_reward_model.py builds it), saved to a temporary folder: a
real sequence classifier of the real size. The conversations are synthetic
user/assistant exchanges of varied length (1 to --max_exchanges exchanges, replies
of a few words to a few hundred). Both scorers are loaded and warmed up with one
call before the clock starts; with --repeats R the order alternates
(single, batched, batched, single, ...) and the seconds are summed.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from result_files import save_result  # beside this file

REPO = Path(__file__).resolve().parent.parent
MODEL = str(REPO / "models" / "SmolLM2-135M-Instruct")

WORDS = ("the answer is that we add the two numbers first and then check the result against what you "
         "said before so could you tell me a little more about what you need here since it matters").split()


def make_reward_model(model: str, out: Path) -> Path:
    """The embedded model with a seeded one-label score head, saved with its tokenizer."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    rm = AutoModelForSequenceClassification.from_pretrained(model, num_labels=1, dtype=torch.float32)
    rm.save_pretrained(out)
    AutoTokenizer.from_pretrained(model).save_pretrained(out)
    return out


def synthetic_conversations(n: int, max_exchanges: int, max_reply_words: int, seed: int) -> list[list[dict]]:
    rng = random.Random(seed)
    conversations = []
    for i in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        messages = [{"role": "user", "content": f"Sam has {a} apples and gets {b} more. How many apples now?"}]
        for turn in range(rng.randint(1, max_exchanges)):
            if turn:
                messages.append({"role": "user", "content": " ".join(rng.choices(WORDS, k=rng.randint(3, 30)))})
            # Reply lengths spread over two orders of magnitude, as candidates' do.
            words = int(round(rng.uniform(0.5, 1.0) * max_reply_words ** rng.random()))
            reply = " ".join(rng.choices(WORDS, k=max(1, words)))
            messages.append({"role": "assistant", "content": f"{reply} So it is {a + b + (i % 2)}."})
        conversations.append(messages)
    return conversations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=16, help="the batched scorer's conversations per forward")
    parser.add_argument("--max_exchanges", type=int, default=3, help="most user/assistant exchanges per conversation")
    parser.add_argument("--max_reply_words", type=int, default=300)
    parser.add_argument("--max_length", type=int, default=2048, help="the scorer's max_length (tokens)")
    parser.add_argument("--dtype", default="float32", help="the scorer's dtype (annotate: auto, float32 on a CPU)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=MODEL)
    args = parser.parse_args()

    import torch

    from collabloop.reward_model import RewardModelScorer

    conversations = synthetic_conversations(args.conversations, args.max_exchanges, args.max_reply_words, args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="bench_rm_"))
    try:
        rm_path = str(make_reward_model(args.model, workdir / "rm"))
        batched = RewardModelScorer(rm_path, batch_size=args.batch_size, max_length=args.max_length, dtype=args.dtype)
        single = RewardModelScorer(rm_path, batch_size=1, max_length=args.max_length, dtype=args.dtype)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    lengths = [len(batched.render(c)) for c in conversations]  # after truncation to max_length
    truncated = batched.texts_truncated
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    padded = sum(max(lengths[i] for i in order[s:s + args.batch_size]) * len(order[s:s + args.batch_size])
                 for s in range(0, len(order), args.batch_size))
    # Warm-up: first-call costs (allocator, kernels) paid by neither timed run.
    batched.score(conversations[:2])
    single.score(conversations[:1])

    seconds = {"single": 0.0, "batched": 0.0}
    scores: dict[str, list[float]] = {}
    run_order = []
    for r in range(args.repeats):
        run_order += ["single", "batched"] if r % 2 == 0 else ["batched", "single"]
    for mode in run_order:
        print(f"scoring {mode} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        if mode == "batched":
            got = batched.score(conversations)
        else:  # Online-RLHF: one conversation per forward pass, in input order
            got = [single.score([c])[0] for c in conversations]
        seconds[mode] += time.perf_counter() - start
        scores.setdefault(mode, got)

    max_diff = max(abs(a - b) for a, b in zip(scores["batched"], scores["single"]))
    agree = max_diff <= 1e-3
    tokens = sum(lengths) * args.repeats
    result = {
        "workload": {"conversations": len(conversations), "batch_size": args.batch_size,
                     "tokens_per_pass": sum(lengths), "min_tokens": min(lengths), "max_tokens": max(lengths),
                     "padded_tokens_per_batched_pass": padded, "padding_fraction": round(1 - sum(lengths) / padded, 3),
                     "dtype": args.dtype, "torch_threads": torch.get_num_threads(), "repeats": args.repeats,
                     "order": run_order},
        "single": {"seconds": round(seconds["single"], 2), "tokens_per_s": round(tokens / seconds["single"], 1),
                   "conversations_per_s": round(len(conversations) * args.repeats / seconds["single"], 2)},
        "batched": {"seconds": round(seconds["batched"], 2), "tokens_per_s": round(tokens / seconds["batched"], 1),
                    "conversations_per_s": round(len(conversations) * args.repeats / seconds["batched"], 2)},
        "max_abs_score_difference": max_diff,
        "scores_agree_within_1e-3": agree,
        "texts_truncated": truncated,
        "speedup_batched_vs_single": round(seconds["single"] / seconds["batched"], 2),
    }
    save_result("reward_model_batching", result)
    print(f"batched reward-model scoring (batch {args.batch_size}, sorted by length) is "
          f"{result['speedup_batched_vs_single']}x the speed of one at a time "
          f"(batched {seconds['batched']:.1f}s, one at a time {seconds['single']:.1f}s for {len(conversations)} "
          f"conversations, {result['workload']['padding_fraction']:.0%} of the batched tokens padding); "
          f"scores {'agree' if agree else 'DO NOT agree'} within 1e-3 (max abs difference {max_diff:.2e})")
    if not agree:
        sys.exit(1)


if __name__ == "__main__":
    main()
