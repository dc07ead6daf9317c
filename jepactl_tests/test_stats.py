"""jepactl.stats against scipy's own numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from jepactl.stats import summarize, welch_interval


def test_summarize_is_scipys_t_interval_of_the_mean() -> None:
    values = [61.2, 63.0, 60.4, 62.7]
    got = summarize(values)
    low, high = scipy_stats.t.interval(0.95, len(values) - 1, loc=np.mean(values),
                                       scale=scipy_stats.sem(values))  # fmt: skip
    assert got["mean"] == pytest.approx(np.mean(values))
    assert got["std"] == pytest.approx(np.std(values, ddof=1))
    assert got["ci95"] == pytest.approx([low, high])
    assert summarize([5.0]) == {"mean": 5.0, "std": None, "ci95": None, "n": 1}
    with pytest.raises(ValueError, match="no values"):
        summarize([])


def test_welch_interval_is_the_welch_satterthwaite_formula() -> None:
    a, b = [31.0, 33.5, 32.2], [29.0, 30.5, 28.7, 29.9]
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = scipy_stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    delta = np.mean(a) - np.mean(b)
    assert welch_interval(a, b) == pytest.approx((delta - half, delta + half))


def test_welch_interval_without_spread_is_none_and_needs_two_values() -> None:
    assert welch_interval([27.5, 27.5], [30.0, 30.0]) is None
    assert welch_interval([27.5, 27.5], [30.0, 31.0]) is not None  # one side varies
    with pytest.raises(ValueError, match="two or more"):
        welch_interval([1.0], [2.0, 3.0])
