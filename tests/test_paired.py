"""The paired statistics of the report: the bootstrap interval over tasks, the verdict, the pairing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from collabloop.paired import compare_tasks
from collabloop.stats import paired_bootstrap, paired_verdict


def test_paired_bootstrap_known_answers():
    # Every task moved by the same amount: no spread, the interval is that amount.
    assert paired_bootstrap([0.25] * 7) == {"mean": 0.25, "ci_low": 0.25, "ci_high": 0.25, "n": 7}
    # Two tasks, 0 and 1: resampled means are 0, 0.5, 1 with chances 1/4, 1/2, 1/4, so the 2.5% and 97.5%
    # quantiles are the ends themselves.
    assert paired_bootstrap([0.0, 1.0]) == {"mean": 0.5, "ci_low": 0.0, "ci_high": 1.0, "n": 2}
    # +-0.1 on four tasks: a resample is all -0.1 (or all +0.1) with chance 1/16 > 2.5%.
    result = paired_bootstrap([0.1, -0.1, 0.1, -0.1])
    assert result["mean"] == pytest.approx(0.0, abs=1e-12)
    assert (result["ci_low"], result["ci_high"], result["n"]) == (-0.1, 0.1, 4)
    assert paired_bootstrap([]) == {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    assert paired_bootstrap([0.3]) == {"mean": 0.3, "ci_low": 0.3, "ci_high": 0.3, "n": 1}
    # Many tasks: the percentile interval is close to the normal one, mean +- 1.96 sd / sqrt(n).
    diffs = np.random.default_rng(7).normal(0.3, 1.0, 400)
    wide = paired_bootstrap(diffs.tolist())
    half = 1.96 * diffs.std() / math.sqrt(diffs.size)
    assert wide["mean"] == pytest.approx(diffs.mean())
    assert wide["ci_low"] == pytest.approx(diffs.mean() - half, abs=0.1 * half)
    assert wide["ci_high"] == pytest.approx(diffs.mean() + half, abs=0.1 * half)
    # Seeded: the same differences give the same interval; another seed another one.
    assert paired_bootstrap(diffs.tolist()) == wide
    assert paired_bootstrap(diffs.tolist(), seed=1) != wide
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="not finite"):
            paired_bootstrap([0.1, bad])


def test_paired_verdict():
    assert paired_verdict({"mean": 0.2, "ci_low": 0.05, "ci_high": 0.3, "n": 10}) == "better"
    assert paired_verdict({"mean": -0.2, "ci_low": -0.3, "ci_high": -0.05, "n": 10}) == "worse"
    # An interval that reaches 0 is no verdict.
    assert paired_verdict({"mean": 0.1, "ci_low": 0.0, "ci_high": 0.3, "n": 10}) == "within noise"
    assert paired_verdict({"mean": 0.0, "ci_low": -0.1, "ci_high": 0.1, "n": 10}) == "within noise"
    # Lower is better (a negative reward weight, e.g. token_amount): the wording turns round.
    assert paired_verdict({"mean": -50.0, "ci_low": -80.0, "ci_high": -20.0, "n": 10}, -0.0001) == "better"
    assert paired_verdict({"mean": 50.0, "ci_low": 20.0, "ci_high": 80.0, "n": 10}, -1.0) == "worse"
    # No direction known (turns has no reward weight): only which way it moved.
    assert paired_verdict({"mean": -1.0, "ci_low": -1.5, "ci_high": -0.5, "n": 10}, None) == "lower"
    assert paired_verdict({"mean": 1.0, "ci_low": 0.5, "ci_high": 1.5, "n": 10}, 0.0) == "higher"
    # One task (its interval is [d, d]) or none says nothing about noise.
    assert paired_verdict(paired_bootstrap([0.5])) == "n/a"
    assert paired_verdict(paired_bootstrap([])) == "n/a"


def test_compare_tasks_pairs_by_task_and_averages_samples():
    base = {"a": [0.0, 1.0], "b": [1.0], "c": [0.5], "e": []}
    other = {"b": [0.0, 0.0, 0.0], "a": [1.0], "d": [1.0]}
    # a: 1 - 0.5 = +0.5, b: 0 - 1 = -1; c is only in base, d only in other, e has no value: left out.
    # Resampled means of (+0.5, -1) are -1, -0.25, +0.5 (chances 1/4, 1/2, 1/4): the interval is [-1, +0.5].
    result = compare_tasks(base, other)
    assert result == {"mean": -0.25, "ci_low": -1.0, "ci_high": 0.5, "n": 2, "base_mean": 0.75, "other_mean": 0.5,
                      "base_conversations": 3, "other_conversations": 4, "only_base": 1, "only_other": 1}
    # Pairing is by task, not by position: the order the tasks were written in changes nothing.
    assert compare_tasks(dict(reversed(base.items())), dict(reversed(other.items()))) == result
    nothing = compare_tasks({"a": [1.0]}, {"b": [1.0]})
    assert (nothing["n"], nothing["mean"], nothing["base_mean"], nothing["only_base"], nothing["only_other"]) == (
        0, None, None, 1, 1)
