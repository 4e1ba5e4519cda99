"""report.md, written from `collect`'s data and the plots that were drawn."""

from __future__ import annotations

from pathlib import Path

from collabloop import grader_talk, paired
from collabloop.metrics import direction
from collabloop.report.collaboration import headline as collaboration_headline
from collabloop.report.collaboration import section as collaboration_section
from collabloop.report.collaboration import simulated_user_section
from collabloop.report.plots import PLOTS
from collabloop.report.reading import (
    BOOTSTRAP_SEED,
    CONFIDENCE,
    LOG_KEYS_FIRST,
    MODEL_STAGE,
    is_number,
)
from collabloop.stats import BOOTSTRAP_RESAMPLES, describe
from collabloop.stats import format_number as _fmt
from collabloop.stats import markdown_table as _table

# Counts that are the table's own columns rather than "other".
COUNT_COLUMNS = ("records_in", "records_out", "pairs_in")


def _fmt_interval(ci: dict) -> str:
    if ci.get("mean") is None:
        return "—"
    return f"{_fmt(ci['mean'])} [{_fmt(ci.get('ci_low'))}, {_fmt(ci.get('ci_high'))}]"


def _verdict(first: dict, last: dict, metric: str) -> str:
    """better / worse when the two intervals do not overlap, in the direction the metric declares."""
    if None in [entry.get(k) for entry in (first, last) for k in ("mean", "ci_low", "ci_high")]:
        return "n/a"
    if first["ci_low"] <= last["ci_high"] and last["ci_low"] <= first["ci_high"]:
        return "within noise"
    up = last["mean"] > first["mean"]
    sign = direction(metric)
    if sign is None:
        return ("higher" if up else "lower") + " (no declared direction)"
    return "better" if up == (sign > 0) else "worse"


def _directions(metrics: list[str]) -> str:
    """"accuracy: higher is better, token_amount: lower is better, turns: none declared"."""
    words = {1.0: "higher is better", -1.0: "lower is better", None: "none declared"}
    return ", ".join(f"{m}: {words[direction(m)]}" for m in metrics) or "no metrics"


def _headline(data: dict) -> list[str]:
    evaluated = [i for i, it in data["iterations"].items() if it["eval"]]
    if not evaluated:
        return [
            "**No evaluation**: this run has no `iter_<i>/eval/summary.json`, so there is no held-out measure "
            "of the policy and no answer to this question yet. The training-candidate numbers further down "
            "are scored on each iteration's own contexts: they describe the training data, not a comparison "
            "between models.",
        ]
    summaries = {i: data["iterations"][i]["eval"]["summary"] for i in evaluated}
    metrics: list[str] = []
    for s in summaries.values():
        metrics += [m for m in s["metrics"] if m not in metrics]
    first, last = evaluated[0], evaluated[-1]
    some = summaries[last]
    lines = [
        f"Evaluation conversations scored per metric: mean [{some.get('confidence', CONFIDENCE):.0%} bootstrap "
        f"interval, {some.get('bootstrap_samples', '?')} resamples] per evaluated iteration "
        "(iteration 0 is the initial model).",
        "",
    ]
    header = ["metric"] + [f"iter {i}" for i in evaluated]
    if len(evaluated) > 1:
        header += [f"change {first} → {last}", "verdict"]
    rows = [["conversations"] + [str(summaries[i].get("num_conversations", "—")) for i in evaluated]
            + (["", ""] if len(evaluated) > 1 else [])]
    # The verdict is the paired one (per-task differences against iteration 0) where conversations pair.
    paired_last = ((data.get("paired") or {}).get(last) or {}).get("metrics") or {} if first == 0 else {}
    verdicts: dict[str, list[str]] = {}
    for metric in metrics:
        row = [metric]
        for i in evaluated:
            entry = summaries[i]["metrics"].get(metric)
            cell = _fmt_interval(entry) if entry else "—"
            if entry and entry.get("failed"):
                cell += f" ({entry['failed']} failed)"
            row.append(cell)
        if len(evaluated) > 1:
            a, b = summaries[first]["metrics"].get(metric) or {}, summaries[last]["metrics"].get(metric) or {}
            delta = b["mean"] - a["mean"] if None not in (a.get("mean"), b.get("mean")) else None
            if metric in paired_last:
                verdict = paired.verdict(paired_last[metric], metric)
            else:
                verdict = _verdict(a, b, metric)
            verdicts.setdefault(verdict, []).append(metric)
            row += [_fmt(delta, signed=True), verdict]
        rows.append(row)
    lines += _table(header, rows)
    lines.append("")
    if len(evaluated) == 1:
        lines.append(f"Only iteration {first} was evaluated: there is no change to report yet.")
    else:
        if first != 0:
            lines.append(f"Iteration 0 (the initial model) was not evaluated; the change is from iteration {first}.")
        # Judged verdicts first; a metric that declares no direction only moved, it is not judged.
        order = ["better", "worse", "within noise", "n/a"]
        said = [f"{v} on {', '.join(verdicts[v])}" for v in order if v in verdicts]
        said += [f"{', '.join(ms)} {v}" for v, ms in sorted(verdicts.items()) if v not in order]
        lines.append(f"**At a glance, iteration {first} → {last}:** " + "; ".join(said) + ".")
        lines.append("")
        lines.append(
            "A verdict is *better* or *worse* only when the paired interval of the per-task differences against "
            "iteration 0 excludes 0 (the paired comparison below); for a metric whose conversations cannot be "
            "paired, only when the two intervals do not overlap. The direction is the one each metric declares "
            "where it is registered, not the sign of its weight in the reward (a negative weight on a metric "
            "where higher is better still counts a rise as better): "
            f"{_directions(metrics)}."
        )
    return lines


def _figure(name: str, figures: dict[str, Path | None], what: str) -> list[str]:
    if figures.get(name) is None:
        return [f"_No plot: {what}._", ""]
    return [f"![{PLOTS[name][1]}]({figures[name].name})", ""]


def _candidate_table(data: dict) -> list[str]:
    trained = {i: it for i, it in data["iterations"].items() if it["trained"]}
    metrics: list[str] = []
    for it in trained.values():
        metrics += [m for m in ((it["rewards"] or {}).get("metrics") or {}) if m not in metrics]
    header = ["iteration", "candidates (without MR)", "MR mean [CI]"] + [f"{m} mean [CI]" for m in metrics]
    header += ["pairs", "margin mean [CI]"]
    rows = []
    for i, it in trained.items():
        r, p = it["rewards"], it["pairs"]
        row = [str(i)]
        if r is None:
            row += ["missing", "—"] + ["—"] * len(metrics)
        else:
            row += [f"{r['candidates']} ({r['rewards_missing']})", _fmt_interval(r["reward_ci"])]
            for m in metrics:
                entry = r["metrics"].get(m)
                cell = _fmt_interval(entry["ci"]) if entry else "—"
                if entry and entry["missing"]:
                    cell += f" ({entry['missing']} failed)"
                row.append(cell)
        row += ["missing", "—"] if p is None else [str(p["pairs"]), _fmt_interval(p["margin_ci"])]
        rows.append(row)
    return _table(header, rows)


def _training_table(data: dict) -> list[str]:
    rows = []
    for i, it in data["iterations"].items():
        if not it["trained"]:
            continue
        t = it["training"]
        if t is None:
            rows.append([str(i), it["stages"][MODEL_STAGE]["stage"] or "—", "missing", "—", "—", "—"])
            continue
        if t["skipped"]:
            rows.append([str(i), t["trainer"] or "—", f"skipped ({t['skipped']})", "—", "—", "—"])
            continue
        cells = []
        for key in LOG_KEYS_FIRST:
            values = [v for _, v in t["curves"].get(key, [])]
            if not values:
                cells.append("—")
                continue
            d = describe(values)
            cells.append(f"{_fmt(values[0])} → {_fmt(values[-1])} (mean {_fmt(d['mean'])})")
        steps = len(t["curves"].get("loss", [])) or t["summary"].get("steps", "—")
        rows.append([str(i), t["trainer"] or "—", str(steps)] + cells)
    if not rows:
        return ["_No trained iterations._"]
    return _table(["iteration", "trainer", "logged steps"] + [f"{k}: first → last" for k in LOG_KEYS_FIRST], rows)


def _cost_usd(counts: dict) -> float | None:
    """What the stage's API calls cost (its `*_cost_usd` counts), or None when it counted none."""
    costs = [v for k, v in counts.items() if k.endswith("_cost_usd") and is_number(v)]
    return sum(costs) if costs else None


def _split_counts(counts: dict) -> tuple[str, str, str]:
    """(dropped, failed, other) cells: drops by reason, failed calls/values, the stage's other counts."""
    dropped, failed, other = [], [], []
    for key, value in sorted(counts.items()):
        if key in COUNT_COLUMNS or key.endswith("_cost_usd"):  # the cost has a column of its own
            continue
        if key.startswith("dropped_"):
            dropped.append(f"{key.removeprefix('dropped_')}: {value}")
        elif "_dropped_" in key:  # a drop of one kind of record: future_dropped_tied -> tied (future)
            kind, reason = key.split("_dropped_", 1)
            dropped.append(f"{reason} ({kind}): {value}")
        elif "failed" in key or "without" in key or "error" in key:
            failed.append(f"{key}: {value}")
        else:
            other.append(f"{key}: {value}")
    return ", ".join(dropped) or "0", ", ".join(failed) or "—", ", ".join(other) or "—"


def _counts_table(data: dict) -> list[str]:
    header = ["iteration", "output (stage)", "status", "records in", "records out", "dropped (reason: n)",
              "failed", "other counts", "seconds", "cost (USD)"]
    rows = []

    def usd(value: float | None) -> str:
        return "—" if value is None else f"{value:.4f}"

    for i, it in data["iterations"].items():
        total_s, total_usd = 0.0, None
        for stage in it["stages"].values():
            counts = stage["counts"]
            records_in = counts.get("records_in", counts.get("pairs_in"))
            dropped, failed, other = _split_counts(counts)
            name = stage["output"] + (f" ({stage['stage']})" if stage["stage"] else "")
            seconds = stage["seconds"]
            total_s += seconds or 0.0
            cost = _cost_usd(counts)
            total_usd = total_usd if cost is None else (total_usd or 0.0) + cost
            rows.append([str(i), name, stage["status"], str(records_in if records_in is not None else "—"),
                         str(counts.get("records_out", "—")), dropped, failed, other,
                         f"{seconds:.1f}" if is_number(seconds) else "—", usd(cost)])
        if it["eval"]:
            s, conv = it["eval"]["summary"], it["eval"]["conversations"]
            failed_values = sum(e.get("failed", 0) for e in s["metrics"].values())
            failed = f"metric values failed: {failed_values}"
            if conv:
                failed = f"conversation errors: {conv['errors']}, " + failed
            other = f"terminated: {conv['terminated']}" if conv else "conversations.jsonl missing"
            seconds = s.get("seconds")
            total_s += seconds if is_number(seconds) else 0.0
            cost = _cost_usd(it["eval"].get("counts") or {})
            total_usd = total_usd if cost is None else (total_usd or 0.0) + cost
            rows.append([str(i), "eval/ (evaluate)", "complete", str(s.get("num_conversations", "—")),
                         str(conv["count"]) if conv else "—", "0", failed, other,
                         f"{seconds:.1f}" if is_number(seconds) else "—", usd(cost)])
        if it["stages"]:
            rows.append([str(i), "**all stages**", "", "", "", "", "", "", f"**{total_s:.1f}**",
                         "" if total_usd is None else f"**{total_usd:.4f}**"])
    return _table(header, rows)


def _grader_talk_line(data: dict) -> str:
    """How many replies spoke to the grader, per iteration and stage: a policy learning to talk the judge up
    shows here first."""
    counted = []  # (iteration, stage, count)
    for i, it in data["iterations"].items():
        stages = [(stage["stage"], stage["counts"]) for stage in it["stages"].values()]
        if it["eval"]:
            stages.append(("evaluate", it["eval"].get("counts") or {}))
        counted += [(i, name, counts[grader_talk.COUNT]) for name, counts in stages if grader_talk.COUNT in counts]
    if not counted:
        return "Replies addressing the grader: not counted in this run's stages."
    total = sum(n for _, _, n in counted)
    what = "none" if total == 0 else f"**{total}**"
    where = ", ".join(f"iteration {i} {name} {n}" for i, name, n in counted)
    return (f"Replies addressing the grader (a note to the judge, a grade, another role's turn; "
            f"collabloop/grader_talk.py): {what} ({where}).")


def render_markdown(data: dict, figures: dict[str, Path | None]) -> str:
    """report.md from collected data and the plots written (None where there was nothing to plot)."""
    its = data["iterations"]
    trained = [str(i) for i, it in its.items() if it["trained"]]
    evaluated = [str(i) for i, it in its.items() if it["eval"]]
    lines = [
        f"# Run report: {data['run_name']}",
        "",
        # With a split by opening, the headline is the collaboration effect per split; else the paired one.
        collaboration_headline(data) or paired.headline(data),
        "",
        f"Trained iterations: {', '.join(trained) or 'none'} · evaluated iterations: {', '.join(evaluated) or 'none'}",
        "",
        _grader_talk_line(data),
        "",
        "## 1. At a glance: did the model become a better collaborator?",
        "",
        *_headline(data),
        "",
        *paired.section(data),
        *collaboration_section(data),
        *_figure("eval_metrics", figures, "no evaluation"),
        "## 2. Training candidates and pairs",
        "",
        "Each iteration's candidates are scored on that iteration's own contexts (later iterations may continue "
        "earlier conversations), so these numbers describe the training data, not a held-out comparison. "
        f"Intervals: {CONFIDENCE:.0%} percentile bootstrap, {BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}. "
        "Metric values are per-candidate means over its simulated futures; a candidate whose futures all failed "
        "has no value and is counted as failed, not scored 0.",
        "",
        *_candidate_table(data),
        "",
        *_figure("reward_distribution", figures, "no rewards.jsonl with scored candidates"),
        *_figure("candidate_metrics", figures, "no candidate metrics"),
        *_figure("pair_margins", figures, "no pairs.jsonl with pairs"),
        "## 3. Training",
        "",
        *_training_table(data),
        "",
        *_figure("training_curves", figures, "no train_metrics.json with a log_history"),
        "## 4. Stage counts and failures",
        "",
        "From each output's `.meta.json` (`counts`) and the iteration's `metrics.json` (seconds; the meta file's "
        "own clock where metrics.json has none).",
        "",
        *_counts_table(data),
        "",
        *simulated_user_section(data),
        "## 5. Missing or unfinished",
        "",
    ]
    problems = [
        f"- iter {i}: " + "; ".join([f"missing {m}" for m in it["missing"]] + it["notes"])
        for i, it in its.items()
        if it["missing"] or it["notes"]
    ]
    lines += problems or ["Nothing missing: every trained iteration has all its stage outputs and meta files."]
    return "\n".join(lines).rstrip() + "\n"
