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

With `pair_future_replies`, the policy's replies inside the simulated futures are paired
too (`future_reply_pairs`), their drops counted under the same reasons prefixed `future_`.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import NamedTuple

from collabloop.jsonl import read_records
from collabloop.records import Pair, Rewarded
from collabloop.stage import StageRun
from collabloop.stage_configs import PairsConfig
from collabloop.stage_spec import StageSpec, offline_training, output_of, own_output


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
    return choose(record.id, record.prompt, record.responses, record.rewards, min_margin, counts, strategy, seed)


def future_reply_pairs(
    record: Rewarded, min_margin: float, counts: Counter, *, strategy: str = "max_min", seed: int = 0
) -> list[Pair]:
    """Pairs of the policy's replies inside `record`'s simulated futures.

    The futures of candidate k that open with the same user turn are S replies of the policy to one
    conversation (the prompt, candidate k, that user turn), each scored by its own future: the
    candidates of the next turn, sampled already. Their pairs are picked as the candidates' are, and
    counted under `future_` reasons. Pair ids: `<record id>/after<k>.<g>`, g numbering candidate k's
    distinct user turns in order of first appearance.
    """
    pairs = []
    for k, response in enumerate(record.responses):
        groups: dict[str, tuple[list[str], list[float | None]]] = {}
        for future, reward in zip(record.futures[k], record.future_rewards[k]):
            messages = future["messages"]
            if future["error"] is not None or len(messages) < 2:
                continue  # no reply of the policy after a user turn
            replies, rewards = groups.setdefault(messages[0]["content"], ([], []))
            replies.append(messages[1]["content"])
            rewards.append(reward)
        for g, (user_turn, (replies, rewards)) in enumerate(groups.items()):
            prompt = [*record.prompt, {"role": "assistant", "content": response},
                      {"role": "user", "content": user_turn}]
            sub = Counter()
            pair = choose(f"{record.id}/after{k}.{g}", prompt, replies, rewards, min_margin, sub, strategy, seed)
            counts["future_reply_groups"] += 1
            counts.update({f"future_{reason}": n for reason, n in sub.items()})
            if pair is not None:
                pairs.append(pair)
    return pairs


def choose(
    pair_id: str, prompt: list[dict], responses: list[str], rewards: list[float | None], min_margin: float,
    counts: Counter, strategy: str, seed: int,
) -> Pair | None:
    """The pair `strategy` picks among `responses` to `prompt`; None (counted by reason) when none is usable."""
    scored = [Candidate(k, r) for k, r in enumerate(rewards) if r is not None]
    if len(scored) < len(rewards):
        counts["candidates_without_reward"] += len(rewards) - len(scored)
    if len(scored) < 2:
        counts["dropped_fewer_than_two_rewards"] += 1
        return None
    if len({c.reward for c in scored}) == 1:
        counts["dropped_all_rewards_tied"] += 1
        return None
    chosen, rejected = pick(scored, strategy, seed, pair_id)
    margin = chosen.reward - rejected.reward
    if margin == 0:
        counts["dropped_pair_rewards_tied"] += 1
        return None
    if responses[chosen.index] == responses[rejected.index]:
        counts["dropped_identical_text"] += 1
        return None
    if margin < min_margin:
        counts["dropped_margin_below_min"] += 1
        return None
    return Pair(
        id=pair_id,
        prompt=prompt,
        chosen=[{"role": "assistant", "content": responses[chosen.index]}],
        rejected=[{"role": "assistant", "content": responses[rejected.index]}],
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
    pairs = []
    for record in records:
        pair = make_pair(record, cfg.min_margin, stage.counts, strategy=cfg.strategy, seed=cfg.seed)
        if pair is not None:
            pairs.append(pair)
        if cfg.pair_future_replies:
            later = future_reply_pairs(record, cfg.min_margin, stage.counts, strategy=cfg.strategy, seed=cfg.seed)
            pairs += later
            stage.counts["pairs_of_future_replies"] += len(later)
    stage.append(pairs)
    return stage.finish([p.id for p in pairs])


STAGE = StageSpec(
    "pairs", "dpo_iteration/pairs.py", PairsConfig, "pairs.jsonl", "pairs", run,
    inputs={"rewards_path": output_of("annotate"), "output_path": own_output},
    runs=offline_training,
)
