"""Mean ± 95% CI (Student t) against scipy, the statistics module and a textbook value."""

from __future__ import annotations

import math
import statistics

import pytest
from scipy import stats

from somna.evals.stats import mean_ci


def test_textbook_value_for_one_two_three():
    ci = mean_ci([1.0, 2.0, 3.0])
    # sd = 1, sem = 1/sqrt(3), t_{0.975, 2} = 4.302653
    assert ci.mean == 2.0 and ci.n == 3
    assert ci.half_width == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_matches_scipy_interval_and_statistics_module(confidence):
    values = [0.81, 0.79, 0.85, 0.83, 0.80]
    ci = mean_ci(values, confidence)
    low, high = stats.t.interval(confidence, df=len(values) - 1, loc=statistics.mean(values), scale=stats.sem(values))
    assert (ci.low, ci.high) == pytest.approx((low, high), rel=1e-12)
    assert ci.mean == pytest.approx(statistics.mean(values))
    expected = stats.t.ppf((1 + confidence) / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    assert ci.half_width == pytest.approx(expected, rel=1e-12)


def test_single_value_has_nan_half_width_and_prints_bare():
    ci = mean_ci([0.5])
    assert ci.mean == 0.5 and ci.n == 1 and math.isnan(ci.half_width)
    assert ci.format() == "0.500"
    assert mean_ci([0.5, 0.7]).format() == f"0.600 ± {mean_ci([0.5, 0.7]).half_width:.3f}"


def test_nan_values_are_left_out_and_empty_is_an_error():
    assert mean_ci([1.0, float("nan"), 3.0]).n == 2
    with pytest.raises(ValueError, match="at least one"):
        mean_ci([float("nan")])
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([1.0, 2.0], confidence=1.5)
