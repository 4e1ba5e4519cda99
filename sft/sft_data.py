"""SFT data: the recipe from a run's best-scored conversations, and the rows the trainer reads.

Loss on assistant turns only, with any chat template: a conversation with n
assistant turns becomes n prompt/completion rows (everything before the turn,
the turn), and TRL computes the loss on completions only.
"""

from __future__ import annotations

from collections import Counter

from collabloop.jsonl import read_records, write_records
from collabloop.records import Rewarded, SFTExample
from collabloop.rewards import best_candidate
from collabloop.trainer_configs import SFTDataConfig


def best_conversations(cfg: SFTDataConfig, counts: Counter) -> list[SFTExample]:
    """One example per context: its best candidate (and optionally a future), if good enough."""
    out = []
    for path in cfg.rewards_paths:
        for record in read_records(path, Rewarded):
            counts["records_in"] += 1
            best = best_candidate(record.rewards)
            if best is None:
                counts["dropped_no_reward"] += 1
                continue
            if cfg.min_reward is not None and record.rewards[best] < cfg.min_reward:
                counts["dropped_below_min_reward"] += 1
                continue
            messages = [*record.prompt, {"role": "assistant", "content": record.responses[best]}]
            if cfg.include_future and record.futures[best]:
                future = next((f for f in record.futures[best] if f["error"] is None), None)
                if future:
                    turns = future["messages"]
                    last_assistant = max((i for i, m in enumerate(turns) if m["role"] == "assistant"), default=-1)
                    messages += turns[: last_assistant + 1]
            out.append(SFTExample(id=f"{record.id}/cand{best}", messages=messages))
    counts["records_out"] = len(out)
    return out


def prompt_completion_rows(examples: list[SFTExample]) -> list[dict]:
    """One row per assistant turn: the messages before it as the prompt, the turn as the completion."""
    rows = []
    for example in examples:
        for i, message in enumerate(example.messages):
            if message["role"] == "assistant" and i > 0:
                rows.append({"prompt": example.messages[:i], "completion": [message]})
    return rows


def build(cfg: SFTDataConfig) -> Counter:
    counts: Counter = Counter()
    write_records(cfg.output_path, best_conversations(cfg, counts))
    return counts


def load_examples(path: str) -> list[SFTExample]:
    return read_records(path, SFTExample)
