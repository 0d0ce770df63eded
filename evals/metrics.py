"""Continual-learning metrics on an accuracy matrix.

R[i, j] is the accuracy on experience j after learning experience i (T x T);
b[j] is the accuracy on experience j before any training. Definitions follow
GEM (Lopez-Paz & Ranzato, 2017) and Chaudhry et al. (2018, "Riemannian Walk
for Incremental Learning": forgetting and intransigence).

Two forgetting conventions are in use and both are offered, named apart:
`forgetting` (max over earlier rows minus final, Chaudhry et al.) and
`forgetting_first` (accuracy right after learning minus final, as Avalanche
reports it). They differ when accuracy on an old experience rises after it was
learned (positive backward transfer) and later falls.
"""

from __future__ import annotations

import numpy as np


def _square(R: np.ndarray) -> np.ndarray:
    R = np.asarray(R, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] == 0:
        raise ValueError(f"accuracy matrix must be square and non-empty, got shape {R.shape}")
    return R


def acc(R: np.ndarray) -> float:
    """Average accuracy after the last experience: mean_j R[T-1, j]."""
    R = _square(R)
    return float(R[-1].mean())


def bwt(R: np.ndarray) -> float:
    """Backward transfer: mean_{j<T-1} (R[T-1, j] - R[j, j]); 0.0 when T == 1."""
    R = _square(R)
    T = R.shape[0]
    if T == 1:
        return 0.0
    return float(np.mean([R[-1, j] - R[j, j] for j in range(T - 1)]))


def fwt(R: np.ndarray, b: np.ndarray) -> float:
    """Forward transfer: mean_{j>0} (R[j-1, j] - b[j]); 0.0 when T == 1."""
    R = _square(R)
    b = np.asarray(b, dtype=float)
    T = R.shape[0]
    if b.shape != (T,):
        raise ValueError(f"baseline accuracies must have shape ({T},), got {b.shape}")
    if T == 1:
        return 0.0
    return float(np.mean([R[j - 1, j] - b[j] for j in range(1, T)]))


def forgetting(R: np.ndarray) -> float:
    """Forgetting (max-previous convention): mean_{j<T-1} max_{l<T-1} R[l, j] - R[T-1, j]; 0.0 when T == 1.

    Rows l < j (before experience j was learned) are included in the max, as in
    the definition; with accuracies at chance before learning they rarely win.
    """
    R = _square(R)
    T = R.shape[0]
    if T == 1:
        return 0.0
    return float(np.mean([R[: T - 1, j].max() - R[-1, j] for j in range(T - 1)]))


def forgetting_first(R: np.ndarray) -> float:
    """Forgetting (first-after-learning convention, Avalanche): mean_{j<T-1} R[j, j] - R[T-1, j]; 0.0 when T == 1.

    This is -BWT; it is kept under its own name because papers quote it as "forgetting".
    """
    R = _square(R)
    T = R.shape[0]
    if T == 1:
        return 0.0
    return float(np.mean([R[j, j] - R[-1, j] for j in range(T - 1)]))


def plasticity(R: np.ndarray) -> float:
    """Plasticity: mean_j R[j, j], how well each experience is learned when it is the newest."""
    R = _square(R)
    return float(np.mean(np.diag(R)))


def intransigence(R: np.ndarray, R_joint: np.ndarray) -> float:
    """Intransigence (Chaudhry et al. 2018, RWalk): mean_k (R_joint[k, k] - R[k, k]).

    Chaudhry et al. define I_k = a*_k - a_{k,k}, where a*_k is the accuracy on
    task k of a reference model trained on all data up to k. Our reference is
    the `joint` learner's run on the same stream and seed, whose R_joint[k, k]
    is exactly that; we average I_k over all T experiences (k = 0 included,
    where both models saw the same data, so I_0 measures run-to-run noise).
    Positive: the learner fails to take in new experiences as well as joint.
    """
    R, R_joint = _square(R), _square(R_joint)
    if R.shape != R_joint.shape:
        raise ValueError(f"joint reference matrix must have shape {R.shape}, got {R_joint.shape}")
    return float(np.mean(np.diag(R_joint) - np.diag(R)))


def average_incremental_accuracy(R: np.ndarray) -> float:
    """Average incremental accuracy (Rebuffi et al. 2017, iCaRL): mean_i mean_{j<=i} R[i, j].

    Row i is averaged over the experiences seen so far only, so early rows are
    not dragged down by experiences the learner has not met yet.
    """
    R = _square(R)
    return float(np.mean([R[i, : i + 1].mean() for i in range(R.shape[0])]))


def experience_curve(R: np.ndarray, j: int, b: np.ndarray | None = None) -> np.ndarray:
    """Accuracy on experience j over time: [b[j],] R[0, j], ..., R[T-1, j] (b first when given).

    Works on a partial run too (rows 0..i of a T-column matrix).
    """
    R = np.asarray(R, dtype=float)
    if R.ndim != 2 or not 0 <= j < R.shape[1]:
        raise ValueError(f"experience index must be in [0, {R.shape[1] if R.ndim == 2 else 0}), got {j}")
    column = R[:, j]
    return column if b is None else np.concatenate([[float(np.asarray(b)[j])], column])


def per_experience(R: np.ndarray, b: np.ndarray) -> list[dict[str, float]]:
    """One row per experience j: before training, just before/after learning it, final, and its forgetting.

    `forgetting` is max_{l<T-1} R[l, j] - R[T-1, j] and `forgetting_first` is
    R[j, j] - R[T-1, j]; both are 0 for the last experience by definition.
    `forward` is R[j-1, j] - b[j] (nan for j = 0).
    """
    R = _square(R)
    b = np.asarray(b, dtype=float)
    T = R.shape[0]
    rows = []
    for j in range(T):
        last = j == T - 1
        rows.append(
            {
                "experience": j,
                "initial": float(b[j]),
                "before_learning": float(R[j - 1, j]) if j else float("nan"),
                "just_learned": float(R[j, j]),
                "final": float(R[-1, j]),
                "forward": float(R[j - 1, j] - b[j]) if j else float("nan"),
                "forgetting": 0.0 if last else float(R[: T - 1, j].max() - R[-1, j]),
                "forgetting_first": 0.0 if last else float(R[j, j] - R[-1, j]),
            }
        )
    return rows


def skill_retention(rows: dict[int, dict[str, float]], before: int = -1) -> dict[str, float]:
    """Skill retention of a run (`rows`: row -> skill scores, `before` = the row before the stream).

    Per skill: its score after the last row, its score before the stream, and their ratio
    (`skill_retention/<skill>`, left out when the skill scored 0 before); `skill_retention` is
    the mean ratio. Empty when the run scored no skills (vector runs, a base without any)."""
    if before not in rows or len(rows) < 2:
        return {}
    first, last = rows[before], rows[max(rows)]
    summary: dict[str, float] = {}
    ratios = []
    for skill in sorted(set(first) & set(last)):
        summary[f"skill_before/{skill}"], summary[f"skill_final/{skill}"] = first[skill], last[skill]
        if first[skill] > 0:
            ratios.append(last[skill] / first[skill])
            summary[f"skill_retention/{skill}"] = ratios[-1]
    if ratios:
        summary["skill_retention"] = float(np.mean(ratios))
    return summary


HEADLINE = ("acc", "bwt", "fwt", "forgetting")
LOWER_IS_BETTER = frozenset({"forgetting", "forgetting_first", "intransigence"})


def summarize(R: np.ndarray, b: np.ndarray, R_joint: np.ndarray | None = None) -> dict[str, float]:
    """The four headline metrics of a run, then the others (`intransigence` only with a joint reference)."""
    summary = {"acc": acc(R), "bwt": bwt(R), "fwt": fwt(R, b), "forgetting": forgetting(R)}
    summary.update(
        forgetting_first=forgetting_first(R),
        plasticity=plasticity(R),
        avg_incremental_acc=average_incremental_accuracy(R),
    )
    if R_joint is not None:
        summary["intransigence"] = intransigence(R, R_joint)
    return summary
