"""Every continual-learning metric on small matrices computed by hand (1x1, T=2, T=3)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from somna.evals import metrics

# T = 3, with R[1, 0] > R[0, 0] so the two forgetting conventions disagree on experience 0.
R3 = np.array([[0.90, 0.10, 0.00], [0.95, 0.95, 0.20], [0.70, 0.50, 0.80]])
B3 = np.array([0.10, 0.20, 0.05])
JOINT3 = np.array([[0.92, 0.0, 0.0], [0.9, 0.97, 0.0], [0.9, 0.9, 0.90]])

R2 = np.array([[0.90, 0.30], [0.40, 0.85]])
B2 = np.array([0.50, 0.10])


def test_t3_by_hand():
    assert metrics.acc(R3) == pytest.approx((0.7 + 0.5 + 0.8) / 3)
    assert metrics.bwt(R3) == pytest.approx(((0.7 - 0.9) + (0.5 - 0.95)) / 2)
    assert metrics.fwt(R3, B3) == pytest.approx(((0.1 - 0.2) + (0.2 - 0.05)) / 2)
    assert metrics.forgetting(R3) == pytest.approx(((0.95 - 0.7) + (0.95 - 0.5)) / 2)  # 0.35
    assert metrics.forgetting_first(R3) == pytest.approx(((0.9 - 0.7) + (0.95 - 0.5)) / 2)  # 0.325
    assert metrics.plasticity(R3) == pytest.approx((0.9 + 0.95 + 0.8) / 3)
    assert metrics.average_incremental_accuracy(R3) == pytest.approx((0.9 + 0.95 + 2.0 / 3) / 3)
    assert metrics.intransigence(R3, JOINT3) == pytest.approx((0.02 + 0.02 + 0.10) / 3)


def test_t2_by_hand():
    assert metrics.acc(R2) == pytest.approx(0.625)
    assert metrics.bwt(R2) == pytest.approx(-0.5)
    assert metrics.fwt(R2, B2) == pytest.approx(0.2)
    assert metrics.forgetting(R2) == pytest.approx(0.5)
    assert metrics.forgetting_first(R2) == pytest.approx(0.5)
    assert metrics.plasticity(R2) == pytest.approx(0.875)
    assert metrics.average_incremental_accuracy(R2) == pytest.approx((0.9 + 0.625) / 2)
    assert metrics.intransigence(R2, np.array([[1.0, 0.0], [0.5, 0.85]])) == pytest.approx(0.05)


def test_one_by_one():
    R, b = np.array([[0.8]]), np.array([0.1])
    summary = metrics.summarize(R, b, R_joint=np.array([[0.9]]))
    assert summary == pytest.approx(
        {
            "acc": 0.8,
            "bwt": 0.0,
            "fwt": 0.0,
            "forgetting": 0.0,
            "forgetting_first": 0.0,
            "plasticity": 0.8,
            "avg_incremental_acc": 0.8,
            "intransigence": 0.1,
        }
    )


def test_summarize_keeps_the_four_headline_keys_first_and_needs_joint_for_intransigence():
    summary = metrics.summarize(R3, B3)
    assert list(summary)[:4] == ["acc", "bwt", "fwt", "forgetting"]
    assert "intransigence" not in summary
    assert summary["forgetting_first"] == pytest.approx(-summary["bwt"])


def test_per_experience_rows_and_curves():
    rows = metrics.per_experience(R3, B3)
    assert [row["experience"] for row in rows] == [0, 1, 2]
    first, last = rows[0], rows[2]
    assert math.isnan(first["before_learning"]) and math.isnan(first["forward"])
    assert (first["initial"], first["just_learned"], first["final"]) == (0.1, 0.9, 0.7)
    assert first["forgetting"] == pytest.approx(0.25) and first["forgetting_first"] == pytest.approx(0.2)
    assert last["forward"] == pytest.approx(0.2 - 0.05) and last["forgetting"] == 0.0
    # the per-experience forgetting averages (over j < T-1) to the headline metric
    assert np.mean([r["forgetting"] for r in rows[:-1]]) == pytest.approx(metrics.forgetting(R3))
    np.testing.assert_allclose(metrics.experience_curve(R3, 1, B3), [0.2, 0.1, 0.95, 0.5])
    np.testing.assert_allclose(metrics.experience_curve(R3[:2], 2), [0.0, 0.2])  # partial run


def test_bad_shapes_are_value_errors():
    with pytest.raises(ValueError, match="square"):
        metrics.plasticity(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="joint reference"):
        metrics.intransigence(R3, R2)
    with pytest.raises(ValueError, match="experience index"):
        metrics.experience_curve(R3, 3)
