"""Quintic Newton–Schulz orthogonalisation (the Muon update's core; ATLAS and M3 reuse it).

Given G = U Σ Vᵀ, the iteration X ← a X + (b A + c A²) X with A = X Xᵀ maps each
singular value s through the odd polynomial p(s) = a s + b s³ + c s⁵ while
keeping U and V, so a few steps push Σ towards the identity and return ≈ U Vᵀ
without an SVD. The coefficients (a, b, c) = (3.4445, −4.7750, 2.0315) are the
ones popularised by Muon: they maximise the slope at 0 so small singular values
grow fast, at the price of landing in a band around 1 (≈ 0.7–1.2) instead of
exactly on it — which is what an optimizer step needs.
"""

from __future__ import annotations

import torch
from torch import Tensor

MUON_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(G: Tensor, steps: int = 5, *, eps: float = 1e-7) -> Tensor:
    """Approximately orthogonalise the last two dims of `G` (a matrix or a batch of them).

    Works for wide and tall matrices (a tall one is processed transposed so the
    Gram matrix is the small side). Computed in float32 and returned in G's dtype.
    """
    if G.ndim < 2:
        raise ValueError(f"newton_schulz: G must have at least 2 dims, got shape {tuple(G.shape)}")
    if steps < 0:
        raise ValueError(f"newton_schulz: steps must be >= 0, got {steps}")
    a, b, c = MUON_COEFFICIENTS
    X = G.float()
    tall = X.shape[-2] > X.shape[-1]
    if tall:
        X = X.mT
    # Frobenius normalisation puts every singular value in [0, 1], inside the polynomial's basin.
    X = X / (torch.linalg.matrix_norm(X, keepdim=True) + eps)
    for _ in range(steps):
        A = X @ X.mT
        X = a * X + (b * A + c * (A @ A)) @ X
    if tall:
        X = X.mT
    return X.to(G.dtype)
