"""The statistics every room shares, in one place: a mean with its 95 % Student-t interval, and
the 95 % Welch interval of a difference of means (compare's Δ). scipy computes both."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample std (``ddof=1``) and the 95% Student-t interval of the mean.

    With one value the std and interval are ``None`` (a single seed has no spread to report).
    """
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no values to summarise")
    mean = float(x.mean())
    if x.size < 2:
        return {"mean": mean, "std": None, "ci95": None, "n": 1}
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.975, x.size - 1)) * std / math.sqrt(x.size)
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half], "n": int(x.size)}


def welch_interval(a: Sequence[float], b: Sequence[float]) -> tuple[float, float] | None:
    """95 % Welch t interval of mean(a) − mean(b) (``scipy.stats.ttest_ind`` with unequal
    variances); both need two or more values. ``None`` when neither side varies: a zero-width
    interval would claim a certainty the seeds cannot give (e.g. two probes that both hit the
    same 2.5-point step of a 40-clip test set)."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        raise ValueError("a Welch interval needs two or more values on each side")
    if float(np.var(a, ddof=1)) == 0 and float(np.var(b, ddof=1)) == 0:
        return None
    with warnings.catch_warnings():  # one side without spread is fine: the other has some
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    return float(ci.low), float(ci.high)
