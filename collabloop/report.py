"""The run report: did the model become a better collaborator, and what did each stage do.

    python -m collabloop.report --run_dir data/runs/demo [--output_dir data/runs/demo/report]

writes `<output_dir>/report.md` and the PNG plots it links:

1. a headline line: the last evaluated iteration against iteration 0 (the
   initial model) on the task metric, paired by task (collabloop/paired.py);
   a table of the evaluation metrics (`iter_<i>/eval/summary.json`) of every
   evaluated iteration and their change from the first to the last; and every
   evaluated iteration against iteration 0, paired by task with a paired
   bootstrap interval (`iter_<i>/eval/conversations.jsonl`);
2. plots: candidate reward (MR) and pair margin distributions, per-metric
   means with bootstrap intervals (training candidates, and evaluation when
   present), training curves from each iteration's `log_history`;
3. a table of counts, failures and seconds per stage and iteration, from the
   stages' meta files and `metrics.json`.

The same run gives the same report.md: bootstrap intervals are seeded and
nothing time-dependent is written. The plots are written first and report.md
last, atomically, so a crash never leaves a half report. Missing pieces (an
iteration without pairs or a model) are reported as missing; a corrupt JSONL
line raises `RecordError` (file:line:field).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
from collections import Counter
from pathlib import Path

from collabloop import paired
from collabloop.jsonl import atomic_file, read_records
from collabloop.loop import STAGE_FILES
from collabloop.records import EvalConversation, Pair, RecordError, Rewarded
from collabloop.stats import bootstrap_ci, describe
from collabloop.stats import format_number as _fmt

logger = logging.getLogger(__name__)

# Intervals of the training-candidate metrics; the evaluation brings its own (summary.json).
CONFIDENCE = 0.95
BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 0

# The model folder is a stage output like the JSONL files: `model/` beside `model.meta.json`.
MODEL_STAGE = "model"
# Keys of a log_history entry that are the x axis, not a curve.
LOG_AXIS_KEYS = ("step", "epoch")
# Curves drawn first, in this order; any other numeric key follows in order of first appearance.
LOG_KEYS_FIRST = ("loss", "rewards/accuracies", "rewards/margins")
# Counts that are the table's own columns rather than "other".
COUNT_COLUMNS = ("records_in", "records_out", "pairs_in")
UNITS = {"token_amount": "tokens", "turns": "turns"}

_ITER_DIR = re.compile(r"^iter_(\d+)$")
_PNG_DPI = 100


# ---------------------------------------------------------------- reading


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}:{e.lineno}", "<file>", f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise RecordError(str(path), "<file>", f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _ci(values: list[float]) -> dict:
    return bootstrap_ci(values, confidence=CONFIDENCE, num_samples=BOOTSTRAP_SAMPLES, seed=BOOTSTRAP_SEED)


def _iteration_dirs(run_dir: Path) -> dict[int, Path]:
    found = {}
    for path in run_dir.iterdir():
        match = _ITER_DIR.match(path.name)
        if match and path.is_dir():
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def _collect_stage(iter_dir: Path, name: str, loop_metrics: dict | None) -> dict:
    output = iter_dir / (name if name == MODEL_STAGE else f"{name}.jsonl")
    meta_path = iter_dir / f"{name}.meta.json"
    meta = _read_json(meta_path) if meta_path.exists() else None
    counts = (meta or {}).get("counts") or {}
    if not isinstance(counts, dict):
        raise RecordError(str(meta_path), "counts", f"expected an object, got {type(counts).__name__}")
    # metrics.json is the loop's record of the stage; the meta file's own clock is the fallback
    # (the loop summary has no entry for the model).
    seconds = ((loop_metrics or {}).get("stages", {}).get(name) or {}).get("seconds")
    if seconds is None and meta is not None:
        seconds = meta.get("seconds")
    if meta is not None:
        status = str(meta.get("status", "unknown"))
    else:
        status = "no meta file" if output.exists() else "missing"
    return {
        "output": output.name + ("/" if name == MODEL_STAGE else ""),
        "exists": output.exists(),
        "meta_file": meta_path.name,
        "has_meta": meta is not None,
        "stage": (meta or {}).get("stage"),
        "status": status,
        "counts": counts,
        "seconds": seconds,
        "partial": output.with_name(output.name + ".partial").exists(),
        "config": (meta or {}).get("config") or {},
    }


def _collect_rewards(path: Path) -> dict:
    records = read_records(path, Rewarded)
    rewards = [r for rec in records for r in rec.rewards]
    scored = [r for r in rewards if r is not None]
    # Per-candidate metric means (each already a mean over that candidate's futures); None = every future failed.
    values: dict[str, list[float]] = {}
    missing: Counter = Counter()
    for rec in records:
        for candidate in rec.metrics:
            for metric, entry in candidate.items():
                values.setdefault(metric, [])
                if entry["mean"] is None:
                    missing[metric] += 1
                else:
                    values[metric].append(entry["mean"])
    return {
        "records": len(records),
        "candidates": len(rewards),
        "rewards": scored,
        "rewards_missing": len(rewards) - len(scored),
        "reward_ci": _ci(scored),
        "metrics": {m: {"values": v, "missing": missing[m], "ci": _ci(v)} for m, v in values.items()},
    }


def _collect_pairs(path: Path) -> dict:
    margins = [p.margin for p in read_records(path, Pair)]
    return {"pairs": len(margins), "margins": margins, "margin_ci": _ci(margins)}


def _training_curves(log_history: list, path: Path) -> tuple[dict[str, list[tuple[float, float]]], Counter]:
    """{key: [(step, value)]} for every numeric key a trainer logged, and how many non-finite values were left out."""
    curves: dict[str, list[tuple[float, float]]] = {}
    non_finite: Counter = Counter()
    for index, entry in enumerate(log_history):
        if not isinstance(entry, dict):
            raise RecordError(str(path), f"log_history[{index}]", f"expected an object, got {type(entry).__name__}")
        # The Trainer's last entry sums up the whole run (train_runtime, train_loss): not a step.
        if "train_runtime" in entry:
            continue
        step = entry.get("step", index + 1)
        if not _is_number(step):
            raise RecordError(str(path), f"log_history[{index}].step", f"expected a number, got {step!r}")
        for key, value in entry.items():
            if key in LOG_AXIS_KEYS or not _is_number(value):
                continue
            if not math.isfinite(value):
                non_finite[key] += 1
                continue
            curves.setdefault(key, []).append((step, float(value)))
    first = [k for k in LOG_KEYS_FIRST if k in curves]
    ordered = {k: curves[k] for k in first}
    ordered.update({k: v for k, v in curves.items() if k not in ordered})
    return ordered, non_finite


def _collect_training(model_dir: Path, trainer: str | None) -> dict:
    path = model_dir / "train_metrics.json"
    data = _read_json(path)
    log_history = data.get("log_history", [])
    if not isinstance(log_history, list):
        raise RecordError(str(path), "log_history", f"expected a list, got {type(log_history).__name__}")
    curves, non_finite = _training_curves(log_history, path)
    return {
        "trainer": trainer,
        "summary": {k: v for k, v in data.items() if k != "log_history"},
        "skipped": data.get("skipped"),
        "curves": curves,
        "non_finite": dict(non_finite),
    }


def _read_eval_summary(path: Path, iteration: int) -> dict:
    """summary.json of one evaluation, checked field by field (it is the headline, so it must be right)."""
    summary = _read_json(path)
    if summary.get("iteration") != iteration:
        raise RecordError(
            str(path), "iteration", f"says {summary.get('iteration')!r} but the file is in iter_{iteration}"
        )
    metrics = summary.get("metrics")
    if not isinstance(metrics, dict):
        raise RecordError(
            str(path), "metrics", "missing or not an object of {metric: {mean, ci_low, ci_high, n, failed}}"
        )
    for name, entry in metrics.items():
        if not isinstance(entry, dict):
            raise RecordError(str(path), f"metrics.{name}", f"expected an object, got {type(entry).__name__}")
        for key in ("mean", "ci_low", "ci_high"):
            value = entry.get(key)
            if value is not None and not (_is_number(value) and math.isfinite(value)):
                raise RecordError(
                    str(path), f"metrics.{name}.{key}", f"expected a finite number or null, got {value!r}"
                )
        for key in ("n", "failed"):
            value = entry.get(key, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise RecordError(str(path), f"metrics.{name}.{key}", f"expected a count >= 0, got {value!r}")
    return summary


def _collect_eval(eval_dir: Path, iteration: int, missing: list[str]) -> dict | None:
    summary_path = eval_dir / "summary.json"
    if not summary_path.exists():
        if eval_dir.exists():
            missing.append("eval/summary.json (the eval folder exists: unfinished evaluation?)")
        return None
    out = {"summary": _read_eval_summary(summary_path, iteration), "conversations": None}
    conversations_path = eval_dir / "conversations.jsonl"
    if conversations_path.exists():
        records = read_records(conversations_path, EvalConversation)
        out["conversations"] = {
            "count": len(records),
            "errors": sum(1 for r in records if r.error is not None),
            "terminated": sum(1 for r in records if r.terminated),
            "metric_errors": sum(len(r.metric_errors) for r in records),
            "task_values": paired.task_values(records),
        }
    else:
        missing.append("eval/conversations.jsonl")
    return out


def _collect_iteration(iteration: int, iter_dir: Path) -> dict:
    out: dict = {"dir": iter_dir.name, "trained": False, "stages": {}, "missing": [], "notes": [],
                 "rewards": None, "pairs": None, "training": None, "eval": None}
    names = (*STAGE_FILES, MODEL_STAGE)
    # iter_0 holds only the evaluation of the initial model; an iteration with any stage output was trained.
    out["trained"] = any(
        (iter_dir / n).exists() or (iter_dir / f"{n}.jsonl").exists() or (iter_dir / f"{n}.meta.json").exists()
        for n in names
    )
    if out["trained"]:
        metrics_path = iter_dir / "metrics.json"
        loop_metrics = _read_json(metrics_path) if metrics_path.exists() else None
        if loop_metrics is None:
            out["missing"].append("metrics.json")
        for name in names:
            stage = _collect_stage(iter_dir, name, loop_metrics)
            out["stages"][name] = stage
            if not stage["exists"]:
                out["missing"].append(stage["output"])
            if not stage["has_meta"]:
                out["missing"].append(stage["meta_file"])
            if stage["partial"]:
                out["notes"].append(f"{stage['output']}.partial exists: the stage is running or was interrupted")
            if stage["has_meta"] and stage["status"] != "complete":
                out["notes"].append(f"{stage['meta_file']} has status {stage['status']!r}, not 'complete'")
        if (iter_dir / "rewards.jsonl").exists():
            out["rewards"] = _collect_rewards(iter_dir / "rewards.jsonl")
        if (iter_dir / "pairs.jsonl").exists():
            out["pairs"] = _collect_pairs(iter_dir / "pairs.jsonl")
        for name, key, made in (("rewards", "records", out["rewards"]), ("pairs", "pairs", out["pairs"])):
            claimed = out["stages"][name]["counts"].get("records_out")
            if made is not None and claimed is not None and claimed != made[key]:
                out["notes"].append(f"{name}.meta.json says records_out={claimed} but {name}.jsonl holds {made[key]}")
        model_dir = iter_dir / MODEL_STAGE
        if (model_dir / "train_metrics.json").exists():
            out["training"] = _collect_training(model_dir, out["stages"][MODEL_STAGE]["stage"])
            for key, n in out["training"]["non_finite"].items():
                out["notes"].append(
                    f"model/train_metrics.json: {n} non-finite value(s) of {key!r} left out of the plot"
                )
        elif model_dir.exists():
            out["missing"].append("model/train_metrics.json")
    out["eval"] = _collect_eval(iter_dir / "eval", iteration, out["missing"])
    return out


def collect(run_dir: str | Path) -> dict:
    """Everything the report shows, read and validated from a run folder (no plotting, no writing)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    iter_dirs = _iteration_dirs(run_dir)
    if not iter_dirs:
        raise FileNotFoundError(f"{run_dir}: no iter_<i> folders; expected a run folder such as data/runs/<run>")
    iterations = {}
    for i, path in iter_dirs.items():
        logger.info("reading %s", path)
        iterations[i] = _collect_iteration(i, path)
    # A metric's direction (higher is better or worse) is the sign of its weight in the reward;
    # the latest iteration's resolved annotate config holds the weights the run trained on.
    weights: dict[str, float] = {}
    for it in reversed(iterations.values()):
        found = it["stages"].get("rewards", {}).get("config", {}).get("metric_weights")
        if isinstance(found, dict):
            weights = {k: float(v) for k, v in found.items() if _is_number(v)}
            break
    return {"run_name": run_dir.resolve().name, "iterations": iterations, "metric_weights": weights,
            "paired": paired.compare_iterations(iterations)}


# ---------------------------------------------------------------- plots


def _new_figure(width_in: float, height_in: float):
    # A Figure on an Agg canvas, without pyplot: headless whatever MPLBACKEND says, no global state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    """Write a PNG under a temporary name and rename it: a reader never sees half a plot."""
    with atomic_file(path, binary=True) as f:
        # No "Software" text chunk: the bytes do not change with the matplotlib version.
        fig.savefig(f, format="png", dpi=_PNG_DPI, metadata={"Software": None})
    return path


def _yerr(ci: dict) -> list[list[float]]:
    return [[max(0.0, ci["mean"] - ci["ci_low"])], [max(0.0, ci["ci_high"] - ci["mean"])]]


def _distribution_plot(groups: list[tuple[str, list[float], dict]], path: Path, title: str, ylabel: str) -> Path:
    """Box plot with every value as a point, and the mean with its bootstrap interval beside each box."""
    import numpy as np

    fig = _new_figure(max(4.5, 1.8 * len(groups) + 2.0), 4.2)
    ax = fig.add_subplot()
    positions = list(range(1, len(groups) + 1))
    # Every point is drawn, so the box's own outlier markers would show some twice.
    ax.boxplot([g[1] for g in groups], positions=positions, widths=0.45, showfliers=False)
    jitter = np.random.default_rng(0)  # seeded: the same run draws the same picture
    for pos, (_, values, ci) in zip(positions, groups):
        ax.scatter(pos + jitter.uniform(-0.15, 0.15, len(values)), values, s=9, alpha=0.35, color="C0", linewidths=0)
        ax.errorbar(pos + 0.33, ci["mean"], yerr=_yerr(ci), fmt="o", color="C3", capsize=4, markersize=5)
    ax.errorbar([], [], yerr=[], fmt="o", color="C3", capsize=4, label=f"mean, {CONFIDENCE:.0%} bootstrap interval")
    ax.set_xticks(positions, [g[0] for g in groups])
    ax.set_xlim(0.4, len(groups) + 0.8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="best", fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _interval_panels(series: dict[str, list[tuple[int, dict]]], path: Path, title: str) -> Path:
    """One panel per metric (scales differ: tokens vs 0..1), mean and interval across iterations."""
    ncols = 2 if len(series) == 4 else min(3, len(series))
    nrows = math.ceil(len(series) / ncols)
    fig = _new_figure(4.0 * ncols, 3.2 * nrows)
    fig.suptitle(title)
    for index, (metric, points) in enumerate(series.items()):
        ax = fig.add_subplot(nrows, ncols, index + 1)
        xs = [i for i, _ in points]
        means = [ci["mean"] for _, ci in points]
        low = [max(0.0, ci["mean"] - ci["ci_low"]) for _, ci in points]
        high = [max(0.0, ci["ci_high"] - ci["mean"]) for _, ci in points]
        ax.errorbar(xs, means, yerr=[low, high], fmt="o-", capsize=4, color="C0")
        ax.set_xticks(xs, [str(i) for i in xs])
        ax.set_xlabel("iteration")
        ax.set_ylabel(UNITS.get(metric, "score"))
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_reward_distribution(data: dict, path: Path) -> Path | None:
    """Candidate MR per iteration (rewards.jsonl `rewards`; None left out and counted in the label)."""
    groups = [
        (f"iter {i}\n{r['candidates']} candidates\n{r['rewards_missing']} without MR", r["rewards"], r["reward_ci"])
        for i, it in data["iterations"].items()
        if (r := it["rewards"]) and r["rewards"]
    ]
    if not groups:
        return None
    return _distribution_plot(groups, path, "Candidate reward per iteration", "multiturn-aware reward (MR)")


def plot_candidate_metrics(data: dict, path: Path) -> Path | None:
    """Per-metric mean of the training candidates per iteration, with bootstrap intervals."""
    series: dict[str, list[tuple[int, dict]]] = {}
    for i, it in data["iterations"].items():
        for metric, entry in ((it["rewards"] or {}).get("metrics") or {}).items():
            if entry["ci"]["mean"] is not None:
                series.setdefault(metric, []).append((i, entry["ci"]))
    if not series:
        return None
    return _interval_panels(series, path, f"Training candidates: metric means, {CONFIDENCE:.0%} bootstrap intervals")


def plot_eval_metrics(data: dict, path: Path) -> Path | None:
    """Evaluation metric means per evaluated iteration, with the intervals of summary.json."""
    series: dict[str, list[tuple[int, dict]]] = {}
    for i, it in data["iterations"].items():
        for metric, entry in ((it["eval"] or {}).get("summary", {}).get("metrics") or {}).items():
            if None not in (entry.get("mean"), entry.get("ci_low"), entry.get("ci_high")):
                series.setdefault(metric, []).append((i, entry))
    if not series:
        return None
    return _interval_panels(series, path, "Evaluation: metric means and bootstrap intervals (summary.json)")


def plot_pair_margins(data: dict, path: Path) -> Path | None:
    """Margin (chosen MR - rejected MR) of the pairs per iteration."""
    groups = [
        (f"iter {i}\n{p['pairs']} pairs", p["margins"], p["margin_ci"])
        for i, it in data["iterations"].items()
        if (p := it["pairs"]) and p["margins"]
    ]
    if not groups:
        return None
    return _distribution_plot(groups, path, "Pair margin per iteration", "margin = chosen MR − rejected MR")


def plot_training_curves(data: dict, path: Path) -> Path | None:
    """One panel per logged key (loss first), one line per iteration, against the step."""
    from matplotlib.ticker import MaxNLocator

    runs = [(i, it["training"]["curves"]) for i, it in data["iterations"].items() if it["training"]]
    keys: list[str] = []
    for _, curves in runs:
        keys += [k for k in curves if k not in keys]
    keys = [k for k in LOG_KEYS_FIRST if k in keys] + [k for k in keys if k not in LOG_KEYS_FIRST]
    if not keys:
        return None
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig = _new_figure(4.2 * ncols, 2.9 * nrows)
    fig.suptitle("Training curves (trainer log_history)")
    for index, key in enumerate(keys):
        ax = fig.add_subplot(nrows, ncols, index + 1)
        for color, (i, curves) in enumerate(runs):
            if key in curves:
                steps, values = zip(*curves[key])
                ax.plot(steps, values, marker=".", color=f"C{color % 10}", label=f"iter {i}")
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if index == 0:
            ax.legend(fontsize="small")
    return _save(fig, path)


# name of the PNG -> (plot function, caption); the report links them in this order.
PLOTS = {
    "eval_metrics": (plot_eval_metrics, "Evaluation metrics across iterations"),
    "reward_distribution": (plot_reward_distribution, "Candidate reward (MR) per iteration"),
    "candidate_metrics": (plot_candidate_metrics, "Training-candidate metric means across iterations"),
    "pair_margins": (plot_pair_margins, "Pair margins per iteration"),
    "training_curves": (plot_training_curves, "Training curves per iteration"),
}


# ---------------------------------------------------------------- markdown


def _fmt_interval(ci: dict) -> str:
    if ci.get("mean") is None:
        return "—"
    return f"{_fmt(ci['mean'])} [{_fmt(ci.get('ci_low'))}, {_fmt(ci.get('ci_high'))}]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _verdict(first: dict, last: dict, weight: float | None) -> str:
    """better / worse when the two intervals do not overlap, in the direction the reward weight gives."""
    if None in [entry.get(k) for entry in (first, last) for k in ("mean", "ci_low", "ci_high")]:
        return "n/a"
    if first["ci_low"] <= last["ci_high"] and last["ci_low"] <= first["ci_high"]:
        return "within noise"
    up = last["mean"] > first["mean"]
    if not weight:
        return ("higher" if up else "lower") + " (no reward weight)"
    return "better" if up == (weight > 0) else "worse"


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
            weight = data["metric_weights"].get(metric)
            if metric in paired_last:
                verdict = paired.verdict(paired_last[metric], weight)
            else:
                verdict = _verdict(a, b, weight)
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
        # Judged verdicts first; a metric outside the reward only moved, it is not judged.
        order = ["better", "worse", "within noise", "n/a"]
        said = [f"{v} on {', '.join(verdicts[v])}" for v in order if v in verdicts]
        said += [f"{', '.join(ms)} {v}" for v, ms in sorted(verdicts.items()) if v not in order]
        lines.append(f"**At a glance, iteration {first} → {last}:** " + "; ".join(said) + ".")
        lines.append("")
        lines.append(
            "A verdict is *better* or *worse* only when the paired interval of the per-task differences against "
            "iteration 0 excludes 0 (the paired comparison below); for a metric whose conversations cannot be "
            "paired, only when the two intervals do not overlap. The direction is the sign of the metric's weight "
            "in the reward "
            f"({', '.join(f'{m}: {w:g}' for m, w in data['metric_weights'].items()) or 'no weights found'})."
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


def _split_counts(counts: dict) -> tuple[str, str, str]:
    """(dropped, failed, other) cells: drops by reason, failed calls/values, the stage's other counts."""
    dropped, failed, other = [], [], []
    for key, value in sorted(counts.items()):
        if key in COUNT_COLUMNS:
            continue
        if key.startswith("dropped_") or "_dropped_" in key:
            dropped.append(f"{key.split('dropped_', 1)[1]}: {value}")
        elif "failed" in key or "without" in key or "error" in key:
            failed.append(f"{key}: {value}")
        else:
            other.append(f"{key}: {value}")
    return ", ".join(dropped) or "0", ", ".join(failed) or "—", ", ".join(other) or "—"


def _counts_table(data: dict) -> list[str]:
    header = ["iteration", "output (stage)", "status", "records in", "records out", "dropped (reason: n)",
              "failed", "other counts", "seconds"]
    rows = []
    for i, it in data["iterations"].items():
        total_s = 0.0
        for stage in it["stages"].values():
            counts = stage["counts"]
            records_in = counts.get("records_in", counts.get("pairs_in"))
            dropped, failed, other = _split_counts(counts)
            name = stage["output"] + (f" ({stage['stage']})" if stage["stage"] else "")
            seconds = stage["seconds"]
            total_s += seconds or 0.0
            rows.append([str(i), name, stage["status"], str(records_in if records_in is not None else "—"),
                         str(counts.get("records_out", "—")), dropped, failed, other,
                         f"{seconds:.1f}" if _is_number(seconds) else "—"])
        if it["eval"]:
            s, conv = it["eval"]["summary"], it["eval"]["conversations"]
            failed_values = sum(e.get("failed", 0) for e in s["metrics"].values())
            failed = f"metric values failed: {failed_values}"
            if conv:
                failed = f"conversation errors: {conv['errors']}, " + failed
            other = f"terminated: {conv['terminated']}" if conv else "conversations.jsonl missing"
            seconds = s.get("seconds")
            total_s += seconds if _is_number(seconds) else 0.0
            rows.append([str(i), "eval/ (evaluate)", "complete", str(s.get("num_conversations", "—")),
                         str(conv["count"]) if conv else "—", "0", failed, other,
                         f"{seconds:.1f}" if _is_number(seconds) else "—"])
        if it["stages"]:
            rows.append([str(i), "**all stages**", "", "", "", "", "", "", f"**{total_s:.1f}**"])
    return _table(header, rows)


def render_markdown(data: dict, figures: dict[str, Path | None]) -> str:
    """report.md from collected data and the plots written (None where there was nothing to plot)."""
    its = data["iterations"]
    trained = [str(i) for i, it in its.items() if it["trained"]]
    evaluated = [str(i) for i, it in its.items() if it["eval"]]
    lines = [
        f"# Run report: {data['run_name']}",
        "",
        paired.headline(data),
        "",
        f"Trained iterations: {', '.join(trained) or 'none'} · evaluated iterations: {', '.join(evaluated) or 'none'}",
        "",
        "## 1. At a glance: did the model become a better collaborator?",
        "",
        *_headline(data),
        "",
        *paired.section(data),
        *_figure("eval_metrics", figures, "no evaluation"),
        "## 2. Training candidates and pairs",
        "",
        "Each iteration's candidates are scored on that iteration's own contexts (later iterations may continue "
        "earlier conversations), so these numbers describe the training data, not a held-out comparison. "
        f"Intervals: {CONFIDENCE:.0%} percentile bootstrap, {BOOTSTRAP_SAMPLES} resamples, seed {BOOTSTRAP_SEED}. "
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


def write_report(run_dir: str | Path, output_dir: str | Path | None = None) -> Path:
    """Collect, plot, and write report.md (last, atomically); returns its path."""
    data = collect(run_dir)
    output_dir = Path(output_dir) if output_dir is not None else Path(run_dir) / "report"
    output_dir.mkdir(parents=True, exist_ok=True)
    figures = {name: plot(data, output_dir / f"{name}.png") for name, (plot, _) in PLOTS.items()}
    report_path = output_dir / "report.md"
    with atomic_file(report_path) as f:
        f.write(render_markdown(data, figures))
    # A plot an earlier report made but this one has no data for would be stale; report.md no longer links it.
    for name, written in figures.items():
        if written is None:
            (output_dir / f"{name}.png").unlink(missing_ok=True)
    logger.info("wrote %s with %d plots", report_path, sum(p is not None for p in figures.values()))
    return report_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run_dir", required=True, help="a run folder, e.g. data/runs/demo")
    parser.add_argument("--output_dir", default=None, help="where report.md and the plots go (default: RUN_DIR/report)")
    args = parser.parse_args(argv)
    report_path = write_report(args.run_dir, args.output_dir)
    # The headline for the console too, the path last.
    headline = next((line for line in report_path.read_text().splitlines() if line.startswith("**Headline:**")), None)
    if headline:
        print(headline.replace("**", ""))  # noqa: T201
    print(report_path)  # noqa: T201


if __name__ == "__main__":
    from collabloop.cli import run_main, setup_logging

    setup_logging()
    run_main(main, is_stage=False)
