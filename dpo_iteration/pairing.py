"""Chosen/rejected pairs from scored candidates (TRL's conversational preference format)."""

from __future__ import annotations

from collections import Counter

from collabloop.jsonl import read_records
from collabloop.records import Pair, Rewarded
from collabloop.stage import StageRun
from collabloop.stage_configs import PairsConfig


def make_pair(record: Rewarded, min_margin: float, counts: Counter) -> Pair | None:
    """Best against worst; None (counted by reason) when no usable pair exists."""
    scored = [(r, k) for k, r in enumerate(record.rewards) if r is not None]
    if len(scored) < 2:
        counts["dropped_fewer_than_two_rewards"] += 1
        return None
    # Ties between equal rewards are broken by candidate order, so the result is stable.
    best_reward, best = max(scored, key=lambda x: (x[0], -x[1]))
    worst_reward, worst = min(scored, key=lambda x: (x[0], x[1]))
    margin = best_reward - worst_reward
    if margin == 0:
        counts["dropped_all_rewards_tied"] += 1
        return None
    if margin < min_margin:
        counts["dropped_margin_below_min"] += 1
        return None
    return Pair(
        id=record.id,
        prompt=record.prompt,
        chosen=[{"role": "assistant", "content": record.responses[best]}],
        rejected=[{"role": "assistant", "content": record.responses[worst]}],
        chosen_reward=best_reward,
        rejected_reward=worst_reward,
        margin=margin,
    )


def run(cfg: PairsConfig) -> dict | None:
    stage = StageRun("pairs", cfg.output_path, Pair, (cfg,), inputs={"rewards": cfg.rewards_path})
    if stage.up_to_date():
        return None
    records = read_records(cfg.rewards_path, Rewarded)
    stage.begin()
    stage.partial.discard()  # pairing is instant and deterministic: always redo it whole
    stage.counts["records_in"] = len(records)
    pairs = [p for p in (make_pair(r, cfg.min_margin, stage.counts) for r in records) if p is not None]
    stage.append(pairs)
    return stage.finish([p.id for p in pairs])
