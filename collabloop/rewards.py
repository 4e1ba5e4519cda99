"""A scored record's candidates as every reader of rewards.jsonl takes them.

`best_candidate` is the one rule for "the best-rewarded candidate" (the
contexts that continue a conversation, the SFT recipe); `candidate_values`
gives the numbers the loop summary, inspection and the report build their
reward statistics from. A candidate's reward is None when it could not be
scored (every simulated future failed a metric the reward needs): it is
passed over, never counted as 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from collabloop.records import Rewarded


def best_candidate(rewards: Sequence[float | None]) -> int | None:
    """The index of the highest reward, the lowest index among equal ones; None when no candidate has one.

    `dpo_iteration.pairing.pick` applies the same tie rule to the best, the worst and the second best.
    """
    scored = [k for k, reward in enumerate(rewards) if reward is not None]
    # max() keeps the first of equal keys: the lowest index wins a tie.
    return max(scored, key=lambda k: rewards[k], default=None)


def candidate_values(records: Iterable[Rewarded]) -> tuple[list[float | None], dict[str, list[float | None]]]:
    """Every candidate's reward, and per metric every candidate's mean over its futures, in file order.

    None where there is no value (an unscored candidate; a candidate whose futures all failed that metric);
    metrics are keyed in the order they first appear. Feed either to `stats.describe` or `stats.bootstrap_ci`.
    """
    rewards: list[float | None] = []
    metric_means: dict[str, list[float | None]] = {}
    for record in records:
        rewards += record.rewards
        for candidate in record.metrics:
            for metric, entry in candidate.items():
                metric_means.setdefault(metric, []).append(entry["mean"])
    return rewards, metric_means
