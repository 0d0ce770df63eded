"""Tests for somna.kernels memory modules: Newton–Schulz, NeuralMemory (Titans), Miras, ATLAS."""

from __future__ import annotations

import pytest
import torch

from somna.kernels.newton_schulz import newton_schulz


@pytest.mark.parametrize("shape", [(32, 64), (64, 32), (3, 16, 48), (2, 40, 24)])
def test_newton_schulz_singular_values_near_one_and_keeps_singular_vectors(shape):
    torch.manual_seed(0)
    G = torch.randn(*shape)
    X = newton_schulz(G, steps=5)
    assert X.shape == G.shape and X.dtype == torch.float32
    s = torch.linalg.svdvals(X)
    assert s.min() > 0.6 and s.max() < 1.25  # the Muon coefficients land in a band around 1
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    polar = U @ Vh
    cosine = (X * polar).sum((-2, -1)) / (X.norm(dim=(-2, -1)) * polar.norm(dim=(-2, -1)))
    assert cosine.min() > 0.97


def test_newton_schulz_rejects_vectors():
    with pytest.raises(ValueError, match="at least 2 dims"):
        newton_schulz(torch.randn(5))
