"""Summary statistics shared by evaluation, reports and inspection."""

from __future__ import annotations

import math
from collections.abc import Sequence

# Resamples of every bootstrap interval the project computes (per-model intervals, paired differences,
# the report's, the inspector's): one number, so two intervals of the same values agree. 10,000 because a
# paired verdict turns on where one end of its interval falls; on the report's sizes (tens of tasks) it costs
# milliseconds.
BOOTSTRAP_RESAMPLES = 10_000
_BOOTSTRAP_BLOCK = 1 << 20  # indices drawn at a time


def bootstrap_ci(
    values: Sequence[float], confidence: float = 0.95, num_samples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> dict:
    """Mean of `values` and its percentile-bootstrap confidence interval.

    Returns {"mean", "ci_low", "ci_high", "n"}; with no values every number is
    None, with one value the interval is that value. The resampling is seeded,
    so the same values give the same interval.
    """
    import numpy as np

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    data = np.asarray([float(v) for v in values], dtype=np.float64)
    n = int(data.size)
    if n == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    if not np.all(np.isfinite(data)):
        raise ValueError("bootstrap_ci got a value that is not finite")
    mean = float(data.mean())
    if n == 1:
        return {"mean": mean, "ci_low": mean, "ci_high": mean, "n": 1}
    rng = np.random.default_rng(seed)
    # Drawn in blocks of about a million indices, so thousands of values (a large run's candidates) do not
    # allocate num_samples x n at once; the generator yields the same indices whatever the block size.
    block = max(1, _BOOTSTRAP_BLOCK // n)
    means = np.concatenate([
        data[rng.integers(0, n, size=(min(block, num_samples - start), n))].mean(axis=1)
        for start in range(0, num_samples, block)
    ])
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return {"mean": mean, "ci_low": float(low), "ci_high": float(high), "n": n}


def describe(values: Sequence[float | None]) -> dict:
    """Count, missing, mean, std, min, max of a list that may hold None (failed values)."""
    present = [float(v) for v in values if v is not None]
    out = {"count": len(values), "missing": len(values) - len(present)}
    if present:
        mean = sum(present) / len(present)
        out.update(
            mean=mean,
            std=math.sqrt(sum((v - mean) ** 2 for v in present) / len(present)),
            min=min(present),
            max=max(present),
        )
    return out


def paired_bootstrap(
    differences: Sequence[float], confidence: float = 0.95, num_samples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> dict:
    """Mean of per-task differences (model B - model A on the same tasks) and its paired bootstrap interval.

    Resampling the tasks, not the two models' values separately, keeps each
    task's pair together: a task's difficulty cancels in its difference, so
    the interval is far narrower than two overlapping per-model intervals
    suggest when both models saw the same tasks. Returns {"mean", "ci_low",
    "ci_high", "n"} (n = tasks); seeded like `bootstrap_ci`, and a non-finite
    difference is refused rather than averaged into a NaN verdict.
    """
    values = [float(d) for d in differences]
    if not all(math.isfinite(d) for d in values):
        raise ValueError("paired_bootstrap got a difference that is not finite")
    return bootstrap_ci(values, confidence=confidence, num_samples=num_samples, seed=seed)


def paired_verdict(paired: dict, direction: float | None = 1.0) -> str:
    """Better or worse only when the paired interval excludes 0, in the metric's direction.

    `direction` > 0: higher is better (accuracy); < 0: lower is better
    (token_amount); None or 0: no known direction, so the answer says only
    which way the metric moved ("higher" / "lower"). An interval touching 0 is
    "within noise". With fewer than two tasks there is no spread to judge
    noise by (one difference gives the interval [d, d]), so the answer is "n/a".
    """
    low, high = paired.get("ci_low"), paired.get("ci_high")
    if low is None or high is None or (paired.get("n") or 0) < 2:
        return "n/a"
    if low > 0:
        moved = "higher"
    elif high < 0:
        moved = "lower"
    else:
        return "within noise"
    if not direction:
        return moved
    return "better" if (moved == "higher") == (direction > 0) else "worse"


def format_number(x: float | None, signed: bool = False) -> str:
    """A statistic as the report prints it: "—" for none, tokens with one decimal, scores with three."""
    if x is None:
        return "—"
    # Token counts are in the hundreds, scores in 0..1: one decimal for the former, three for the latter.
    digits = 1 if abs(x) >= 100 else 3
    if round(x, digits) == 0:
        x = 0.0  # a tiny negative value would print as "-0.000"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def markdown_table(header: list[str], rows: list[list]) -> list[str]:
    """A markdown table, one line per row (the report's, the paired comparison's and compare's)."""
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]
