"""The run report's PNG plots, drawn headless from `collect`'s data.

Each `plot_*` function writes one PNG (under a temporary name, then renamed)
and returns its path, or None when the run has nothing for it to show.
"""

from __future__ import annotations

import math
from pathlib import Path

from collabloop.jsonl import atomic_file
from collabloop.report.reading import CONFIDENCE, LOG_KEYS_FIRST

UNITS = {"token_amount": "tokens", "turns": "turns"}
_PNG_DPI = 100


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
