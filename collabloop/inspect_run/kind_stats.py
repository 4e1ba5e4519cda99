"""Statistics of a stage file's records, per record kind: plain dicts of numbers, ready for json.dumps."""

from __future__ import annotations

from collections import Counter

from collabloop.rewards import candidate_values
from collabloop.stats import bootstrap_ci, describe


def error_reason(message: str) -> str:
    """The kind of a failure: the text before the first ': ' (what follows varies per call)."""
    return message.split(": ", 1)[0]


def _distribution(values) -> dict:
    return dict(sorted(Counter(values).items()))


def _context_stats(records) -> dict:
    return {
        "turns": _distribution(r.turn for r in records),
        "distinct_tasks": len({r.task_id for r in records}),
        "prompt_messages": describe([len(r.prompt) for r in records]),
    }


def _generation_stats(records) -> dict:
    lengths_chars = [len(text) for r in records for text in r.responses]
    return {
        "candidates_per_record": _distribution(len(r.responses) for r in records),
        "response_length_chars": describe(lengths_chars),
        "empty_responses": sum(1 for r in records for text in r.responses if not text.strip()),
    }


def _simulation_stats(records) -> dict:
    futures = [f for r in records for per in r.futures for f in per]
    errors = [f["error"] for f in futures if f["error"] is not None]
    return {
        "futures": len(futures),
        "futures_per_candidate": _distribution(len(per) for r in records for per in r.futures),
        "terminated": sum(1 for f in futures if f["terminated"]),
        "failed": len(errors),
        "errors_by_reason": dict(Counter(map(error_reason, errors)).most_common()),
    }


def _reward_stats(records) -> dict:
    rewards, candidate_means = candidate_values(records)
    # The per-future values behind each candidate mean: how many, and why the failed ones failed.
    values: Counter = Counter()
    errors: dict[str, list[str]] = {}
    for r in records:
        for per_candidate in r.metrics:
            for name, entry in per_candidate.items():
                values[name] += len(entry["values"])
                errors.setdefault(name, []).extend(e for e in entry["errors"] if e is not None)
    metrics = {
        name: {
            # Stats over the per-candidate means, the numbers the reward is built from.
            "candidate_means": describe(means),
            "values": values[name],
            "values_failed": len(errors[name]),
            "errors_by_reason": dict(Counter(map(error_reason, errors[name])).most_common()),
        }
        for name, means in sorted(candidate_means.items())
    }
    return {
        "rewards": describe(rewards),
        "candidates_without_reward": [f"{r.id}[{k}]" for r in records for k, v in enumerate(r.rewards) if v is None],
        "metrics": metrics,
    }


def _pair_stats(records) -> dict:
    return {
        "margin": describe([p.margin for p in records]),
        "chosen_reward": describe([p.chosen_reward for p in records]),
        "rejected_reward": describe([p.rejected_reward for p in records]),
    }


def _evaluation_stats(records) -> dict:
    names = sorted({name for r in records for name in (*r.metrics, *r.metric_errors)})
    metrics = {}
    for name in names:
        values = [r.metrics.get(name) for r in records]
        errors = [r.metric_errors[name] for r in records if name in r.metric_errors]
        metrics[name] = {
            **bootstrap_ci([v for v in values if v is not None]),
            "missing": sum(1 for v in values if v is None),
            "errors_by_reason": dict(Counter(map(error_reason, errors)).most_common()),
        }
    errors = [r.error for r in records if r.error is not None]
    return {
        "assistant_turns": describe([sum(m["role"] == "assistant" for m in r.messages) for r in records]),
        "terminated": sum(1 for r in records if r.terminated),
        "failed": len(errors),
        "errors_by_reason": dict(Counter(map(error_reason, errors)).most_common()),
        "metrics": metrics,
    }


def _task_stats(records) -> dict:
    return {
        "by_task_kind": dict(Counter(t.task for t in records).most_common()),
        "with_opening_prompt": sum(1 for t in records if t.prompt is not None),
    }


def _sft_stats(records) -> dict:
    return {
        "assistant_turns": _distribution(sum(m["role"] == "assistant" for m in r.messages) for r in records),
        "messages": describe([len(r.messages) for r in records]),
    }


# A kind's records carry every field of the kinds it extends, so its statistics include theirs.
STATS_BY_KIND = {
    "contexts": (_context_stats,),
    "generations": (_context_stats, _generation_stats),
    "simulations": (_context_stats, _generation_stats, _simulation_stats),
    "rewards": (_context_stats, _generation_stats, _simulation_stats, _reward_stats),
    "pairs": (_pair_stats,),
    "evaluation": (_evaluation_stats,),
    "tasks": (_task_stats,),
    "sft": (_sft_stats,),
}
