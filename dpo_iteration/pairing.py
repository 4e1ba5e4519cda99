"""Chosen/rejected pairs from scored candidates (TRL's conversational preference format).

A strategy (`PairsConfig.strategy`, Online-RLHF's `choose_type` names) picks two of a
record's scored candidates:

- `max_min`: the best against the worst.
- `max_random`: the best against one of the other candidates, drawn uniformly.
- `max_max`: the best against the second best (the hardest pair).
- `random`: two distinct candidates drawn uniformly; the higher reward is chosen.

Candidates whose reward is null are left out first (counted as
`candidates_without_reward`). When several candidates share the reward a strategy
looks for (the best, the worst, the second best), the first by index is taken.
A draw depends only on (seed, record id), never on the order of the records, so
reruns, resumed runs and shards give the same pairs.

A record gives no pair, and is counted under the first reason that applies, when:
- `dropped_fewer_than_two_rewards`: fewer than 2 candidates have a reward;
- `dropped_all_rewards_tied`: every scored candidate has the same reward;
- `dropped_pair_rewards_tied`: the two picked candidates have the same reward
  (e.g. `max_max` when the best reward is shared); no redraw;
- `dropped_identical_text`: the two picked responses are the same string;
- `dropped_margin_below_min`: the reward gap is below `min_margin`.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import NamedTuple

from collabloop.jsonl import read_records
from collabloop.records import Pair, Rewarded
from collabloop.stage import StageRun
from collabloop.stage_configs import PairsConfig


class Candidate(NamedTuple):
    index: int
    reward: float


def _reward(c: Candidate) -> float:
    return c.reward


def draw_rng(seed: int, record_id: str) -> random.Random:
    """The random source of one record's draws.

    A string seed is hashed with SHA-512, not `hash()`, so the draws are the same on
    every machine and process whatever PYTHONHASHSEED is.
    """
    return random.Random(f"{seed}/{record_id}")


def pick(scored: list[Candidate], strategy: str, seed: int, record_id: str) -> tuple[Candidate, Candidate]:
    """(chosen, rejected) among `scored` (index order, at least 2, not all tied)."""
    # max() and min() return the first of equal candidates: the lowest index wins ties.
    best = max(scored, key=_reward)
    others = [c for c in scored if c.index != best.index]
    if strategy == "max_min":
        return best, min(scored, key=_reward)
    elif strategy == "max_random":
        return best, draw_rng(seed, record_id).choice(others)
    elif strategy == "max_max":
        return best, max(others, key=_reward)
    elif strategy == "random":
        a, b = sorted(draw_rng(seed, record_id).sample(scored, 2), key=lambda c: (-c.reward, c.index))
        return a, b
    else:
        raise ValueError(f"unknown pair strategy {strategy!r}; valid: {list(PairsConfig.STRATEGIES)}")


def make_pair(
    record: Rewarded, min_margin: float, counts: Counter, *, strategy: str = "max_min", seed: int = 0
) -> Pair | None:
    """The pair `strategy` picks from `record`; None (counted by reason) when no usable pair exists."""
    scored = [Candidate(k, r) for k, r in enumerate(record.rewards) if r is not None]
    if len(scored) < len(record.rewards):
        counts["candidates_without_reward"] += len(record.rewards) - len(scored)
    if len(scored) < 2:
        counts["dropped_fewer_than_two_rewards"] += 1
        return None
    if len({c.reward for c in scored}) == 1:
        counts["dropped_all_rewards_tied"] += 1
        return None
    chosen, rejected = pick(scored, strategy, seed, record.id)
    margin = chosen.reward - rejected.reward
    if margin == 0:
        counts["dropped_pair_rewards_tied"] += 1
        return None
    if record.responses[chosen.index] == record.responses[rejected.index]:
        counts["dropped_identical_text"] += 1
        return None
    if margin < min_margin:
        counts["dropped_margin_below_min"] += 1
        return None
    return Pair(
        id=record.id,
        prompt=record.prompt,
        chosen=[{"role": "assistant", "content": record.responses[chosen.index]}],
        rejected=[{"role": "assistant", "content": record.responses[rejected.index]}],
        chosen_reward=chosen.reward,
        rejected_reward=rejected.reward,
        margin=margin,
    )


def run(cfg: PairsConfig) -> dict | None:
    stage = StageRun("pairs", cfg.output_path, Pair, (cfg,), inputs={"rewards": cfg.rewards_path},
                     code=("dpo_iteration.pairing",))
    if stage.up_to_date():
        return None
    records = read_records(cfg.rewards_path, Rewarded)
    stage.begin()
    stage.partial.discard()  # pairing is instant and deterministic: always redo it whole
    stage.counts["records_in"] = len(records)
    stage.counts["candidates_without_reward"] = 0  # printed even when none
    pairs = [make_pair(r, cfg.min_margin, stage.counts, strategy=cfg.strategy, seed=cfg.seed) for r in records]
    pairs = [p for p in pairs if p is not None]
    stage.append(pairs)
    return stage.finish([p.id for p in pairs])
