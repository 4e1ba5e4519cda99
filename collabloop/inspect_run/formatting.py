"""The text of a summary from `summarize`: a file's statistics, a model's metrics, a run's brief lines."""

from __future__ import annotations

from pathlib import Path


def format_value(value) -> str:
    """A value as inspection prints it: "n/a" for none, a float to 4 significant digits."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _stats_line(d: dict) -> str:
    """A `describe` dict as one line."""
    if "mean" not in d:
        return f"no values ({d['count']} missing)" if d["count"] else "no values"
    text = (f"mean {format_value(d['mean'])}, std {format_value(d['std'])}, min {format_value(d['min'])}, "
            f"max {format_value(d['max'])} (n={d['count']}")
    return text + (f", {d['missing']} missing)" if d["missing"] else ")")


def _dist_line(dist: dict) -> str:
    return ", ".join(f"{key}: {count}" for key, count in dist.items()) or "none"


def _reason_lines(errors_by_reason: dict, indent: str) -> list[str]:
    return [f"{indent}{count:>5} x {reason}" for reason, count in errors_by_reason.items()]


def _format_stats(kind: str, s: dict) -> list[str]:
    lines = []
    if "turns" in s:
        lines.append(f"turns: {_dist_line(s['turns'])} ({s['distinct_tasks']} distinct tasks)")
        lines.append(f"prompt messages: {_stats_line(s['prompt_messages'])}")
    if "candidates_per_record" in s:
        lines.append(f"candidates per record (K): {_dist_line(s['candidates_per_record'])}")
        lines.append(f"response length (chars): {_stats_line(s['response_length_chars'])}")
        lines.append(f"empty responses: {s['empty_responses']}")
    if "futures_per_candidate" in s:
        lines.append(
            f"futures: {s['futures']} (per candidate S: {_dist_line(s['futures_per_candidate'])}), "
            f"terminated {s['terminated']}, failed {s['failed']}"
        )
        lines += _reason_lines(s["errors_by_reason"], "  ")
    if kind == "rewards":
        lines.append(f"reward (MR) per candidate: {_stats_line(s['rewards'])}")
        without = s["candidates_without_reward"]
        shown = ", ".join(without[:5]) + (", ..." if len(without) > 5 else "")
        lines.append(f"candidates without reward: {len(without)}" + (f" ({shown})" if without else ""))
        lines.append("metrics (stats over candidate means; failed counts per-future values):")
        for name, m in s["metrics"].items():
            lines.append(f"  {name}: {_stats_line(m['candidate_means'])}; failed {m['values_failed']} of {m['values']}")
            lines += _reason_lines(m["errors_by_reason"], "    ")
    if kind == "pairs":
        lines.append(f"margin: {_stats_line(s['margin'])}")
        lines.append(f"chosen reward: {_stats_line(s['chosen_reward'])}")
        lines.append(f"rejected reward: {_stats_line(s['rejected_reward'])}")
    if kind == "evaluation":
        lines.append(f"assistant turns: {_stats_line(s['assistant_turns'])}")
        lines.append(f"terminated: {s['terminated']}, failed: {s['failed']}")
        lines += _reason_lines(s["errors_by_reason"], "  ")
        lines.append("metrics (mean, 95% bootstrap interval):")
        for name, m in s["metrics"].items():
            lines.append(
                f"  {name}: {format_value(m['mean'])} [{format_value(m['ci_low'])}, {format_value(m['ci_high'])}] "
                f"(n={m['n']}, {m['missing']} missing)"
            )
            lines += _reason_lines(m["errors_by_reason"], "    ")
    if kind == "tasks":
        lines.append(f"by task kind: {_dist_line(s['by_task_kind'])}")
        lines.append(f"with opening prompt: {s['with_opening_prompt']}")
    if kind == "sft":
        lines.append(f"assistant turns: {_dist_line(s['assistant_turns'])}")
        lines.append(f"messages: {_stats_line(s['messages'])}")
    return lines


def _meta_lines(meta: dict | None) -> list[str]:
    if meta is None:
        return ["meta: none (no .meta.json beside it)"]
    counts = ", ".join(f"{k}={v}" for k, v in (meta.get("counts") or {}).items())
    head = f"meta: stage {meta.get('stage')}, status {meta.get('status')}, {meta.get('seconds')}s"
    return [head, f"  counts: {counts}"]


def _format_file(summary: dict) -> str:
    lines = [
        summary["path"],
        f"kind: {summary['kind']} (found by: {summary['kind_source']})",
        f"records: {summary['num_records']}",
        f"fields: {', '.join(summary['fields'])}",
        *_meta_lines(summary["meta"]),
        *_format_stats(summary["kind"], summary["stats"]),
    ]
    return "\n".join(lines[:1] + ["  " + line for line in lines[1:]])


def _format_model(summary: dict) -> str:
    lines = [summary["path"], "kind: trained model", *_meta_lines(summary["meta"])]
    lines.append(f"training log entries: {summary['log_entries']}")
    lines += [f"{name}: {format_value(value)}" for name, value in summary["train_metrics"].items()]
    lines.append(f"files: {', '.join(summary['files'])}")
    return "\n".join(lines[:1] + ["  " + line for line in lines[1:]])


def brief(summary: dict, label: str | None = None) -> str:
    """One line about one file or model of an iteration, named `label` (default: its file name)."""
    name = label or Path(summary["path"]).name
    if summary["type"] == "model":
        metrics = summary["train_metrics"]
        status = (summary["meta"] or {}).get("status", "no meta")
        return (
            f"{name:<24} {status:<9} {metrics.get('steps', '?')} steps, "
            f"loss {format_value(metrics.get('first_loss'))} -> {format_value(metrics.get('last_loss'))}"
        )
    s, kind = summary["stats"], summary["kind"]
    status = (summary["meta"] or {}).get("status", "no meta")
    head = f"{name:<24} {status:<9} {summary['num_records']} {kind}"
    if kind == "rewards":
        failed = sum(m["values_failed"] for m in s["metrics"].values())
        detail = (
            f"reward mean {format_value(s['rewards'].get('mean'))} over {s['rewards']['count']} candidates, "
            f"{len(s['candidates_without_reward'])} without reward, {failed} metric values failed"
        )
    elif kind == "simulations":
        detail = f"{s['futures']} futures, {s['terminated']} terminated, {s['failed']} failed"
    elif kind == "generations":
        mean_chars = format_value(s["response_length_chars"].get("mean"))
        detail = f"K {_dist_line(s['candidates_per_record'])}, mean response {mean_chars} chars"
    elif kind == "contexts":
        detail = f"turns {_dist_line(s['turns'])}"
    elif kind == "pairs":
        detail = f"margin mean {format_value(s['margin'].get('mean'))}"
    elif kind == "evaluation":
        detail = ", ".join(f"{n} {format_value(m['mean'])}" for n, m in s["metrics"].items())
    elif kind == "tasks":
        detail = _dist_line(s["by_task_kind"])
    elif kind == "sft":
        detail = f"assistant turns {_dist_line(s['assistant_turns'])}"
    else:
        raise ValueError(f"no brief line for kind {kind!r}")
    return f"{head}: {detail}"


def _format_run(summary: dict) -> str:
    lines = [summary["path"]]
    for group in summary["groups"]:
        lines.append(f"  {group['name']}")
        lines += [f"    {brief(entry['summary'], entry['label'])}" for entry in group["entries"]]
        for u in group["unfinished"]:
            lines.append(f"    {u['output']:<24} {u['status']:<9} stage {u['stage']} has no output yet")
    return "\n".join(lines)


def format_summary(summary: dict) -> str:
    """The text of a summary from `summarize`."""
    if summary["type"] == "file":
        return _format_file(summary)
    if summary["type"] == "model":
        return _format_model(summary)
    if summary["type"] == "run":
        return _format_run(summary)
    raise ValueError(f"unknown summary type {summary['type']!r}")
