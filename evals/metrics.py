"""Continual-learning metrics on an accuracy matrix.

R[i, j] is the accuracy on experience j after learning experience i (T x T);
b[j] is the accuracy on experience j before any training. Definitions follow
GEM (Lopez-Paz & Ranzato, 2017) and Chaudhry et al. (2018).
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


def summarize(R: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """The four headline metrics of a run."""
    return {"acc": acc(R), "bwt": bwt(R), "fwt": fwt(R, b), "forgetting": forgetting(R)}
