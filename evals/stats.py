"""Seed statistics: mean with a Student-t confidence interval.

Continual-learning results vary a lot across seeds (class order, init), and
with the usual 3-5 seeds a normal-approximation interval is far too narrow;
the t-distribution with n-1 degrees of freedom is the honest one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class MeanCI:
    """mean ± half_width is the `confidence` interval of the mean of n values."""

    mean: float
    half_width: float
    n: int
    confidence: float = 0.95

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def format(self, digits: int = 3) -> str:
        """'0.812 ± 0.023'; a single value prints without an interval."""
        if math.isnan(self.half_width):
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f}"


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> MeanCI:
    """Mean and half-width t_{(1+c)/2, n-1} * s / sqrt(n), s the sample (ddof=1) standard deviation.

    With n = 1 there is no spread to estimate, so the half-width is nan (not 0,
    which would claim certainty); formatting then shows the bare value.
    NaN values (a metric a run could not compute) are left out before counting n.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    array = np.asarray(list(values), dtype=float)
    array = array[~np.isnan(array)]
    n = int(array.size)
    if n == 0:
        raise ValueError("mean_ci needs at least one non-nan value, got none")
    mean = float(array.mean())
    if n == 1:
        return MeanCI(mean, float("nan"), 1, confidence)
    sem = float(array.std(ddof=1)) / math.sqrt(n)
    half_width = float(stats.t.ppf((1 + confidence) / 2, df=n - 1)) * sem
    return MeanCI(mean, half_width, n, confidence)
