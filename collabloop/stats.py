"""Summary statistics shared by evaluation, reports and inspection."""

from __future__ import annotations

import math
from collections.abc import Sequence


def bootstrap_ci(
    values: Sequence[float], confidence: float = 0.95, num_samples: int = 1000, seed: int = 0
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
    means = data[rng.integers(0, n, size=(num_samples, n))].mean(axis=1)
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
