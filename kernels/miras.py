"""Miras ("It's All Connected"): attentional biases and retention read maps for the neural memory.

A Miras memory is chosen by (attentional bias ℓ, retention). The chunkwise
machinery is NeuralMemory's (neural_memory.py); this module supplies the pieces
that differ and registers the paper's three named models:
  - Moneta: ℓ_p bias (p = 3), retention by q-norm normalisation W = A / ‖A‖_q^{q−2} (q = 4);
  - Yaad:   Huber bias (ℓ2 inside radius δ, δ·ℓ1 outside);
  - Memora: ℓ2 bias, KL retention: W = c·softmax((1−λ) log W − η′∇ℓ) row-wise, which is
            the linear recurrence Z ← (1−λ) Z − η′∇ℓ on logits Z read through c·softmax(Z)
            (softmax is blind to the row constants log c − logsumexp).
An attentional bias supplies `output_error(prediction, target) = ∂ℓ/∂M(k)`;
a retention supplies `read(accumulator) -> weights` and `identity = False`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from somna.kernels.neural_memory import NeuralMemory
from somna.platform.registry import register_kernel


class LpBias(nn.Module):
    """ℓ_p attentional bias Σ|M(k) − v|^p: ∂ℓ/∂M(k) = p·sign(r)·|r|^{p−1}, sign smoothed as tanh(sharpness·r).

    sharpness=None uses the exact sign (smooth anyway for p > 1).
    """

    def __init__(self, p: float = 3.0, sharpness: float | None = 10.0):
        super().__init__()
        if p < 1:
            raise ValueError(f"p must be >= 1, got {p}")
        self.p, self.sharpness = p, sharpness

    def output_error(self, prediction: Tensor, target: Tensor) -> Tensor:
        residual = prediction - target
        sign = residual.sign() if self.sharpness is None else torch.tanh(self.sharpness * residual)
        return self.p * sign * residual.abs().pow(self.p - 1)


class HuberBias(nn.Module):
    """Yaad's Huber bias: ½‖r‖² while ‖r‖ ≤ δ, else δ‖r‖₁ (gradient δ·sign(r)); one learnable δ > 0 per head.

    The paper makes δ_t data-dependent; here each head learns one δ. Only
    tokens in the δ·sign(r) branch give δ a gradient, and they give the value
    projection almost none (sign has no slope), so δ must start above the
    typical residual: at δ = 1 against ‖v − M(k)‖ ≈ 2.3 nearly every token took
    the sign branch and MQAR recall stayed at 0.13 (4 pairs).
    """

    def __init__(self, delta: float = 10.0, num_heads: int = 1):
        super().__init__()
        if delta <= 0:
            raise ValueError(f"delta must be > 0, got {delta}")
        self.log_delta = nn.Parameter(torch.full((num_heads,), math.log(delta)))

    def output_error(self, prediction: Tensor, target: Tensor) -> Tensor:
        residual = prediction - target  # (B, H, T, d)
        delta = self.log_delta.exp().to(residual.dtype)[:, None, None]
        inside = residual.norm(dim=-1, keepdim=True) <= delta
        return torch.where(inside, residual, delta * residual.sign())


class LqNormalizedRead(nn.Module):
    """Moneta's retention read map: W = A / ‖A‖_q^{q−2}, the q-norm taken over the whole matrix."""

    identity = False

    def __init__(self, q: float = 4.0, eps: float = 1e-6):
        super().__init__()
        if q < 2:
            raise ValueError(f"q must be >= 2, got {q}")
        self.q, self.eps = q, eps

    def read(self, accumulator: Tensor) -> Tensor:
        norm = accumulator.abs().pow(self.q).sum((-2, -1), keepdim=True).pow(1 / self.q)
        return accumulator / (norm + self.eps).pow(self.q - 2)


class SoftmaxRead(nn.Module):
    """Memora's retention read map: each row of W is c·(softmax(g·Z_row) − 1/d_out), c = d_out/√d_in, g = √d_in.

    Two changes to the plain c·softmax(Z) (both measured on MQAR, see
    docs/bench_recall.md): the gain g makes the softmax Jacobian at uniform
    rows c·g/d_out·(I − 11ᵀ/d_out) ≈ the identity, so a write moves W as much as
    the same write moves an identity-read memory (without it writes shrank by
    1/√d_in); subtracting the uniform row removes the all-positive matrix's
    rank-one mean, which dominated (σ₂/σ₁ ≈ 0.08 at depth 2, vs ≈ 0.9 for
    Titans' weights). The update is still the KL retention of the logits.
    """

    identity = False

    def read(self, accumulator: Tensor) -> Tensor:
        d_in, d_out = accumulator.shape[-2:]
        gain = math.sqrt(d_in)
        return d_out / gain * (F.softmax(gain * accumulator, dim=-1) - 1 / d_out)


@register_kernel("moneta")
class Moneta(NeuralMemory):
    """Miras Moneta: ℓ_p attentional bias (p=3) with q-norm (q=4) normalised memory, no momentum by default."""

    def __init__(self, dim: int, num_heads: int = 4, *, p: float = 3.0, q: float = 4.0, **options):
        options.setdefault("momentum", False)
        super().__init__(dim, num_heads, attentional_bias=LpBias(p), retention=LqNormalizedRead(q), **options)


@register_kernel("yaad")
class Yaad(NeuralMemory):
    """Miras Yaad: Huber attentional bias with a learnable radius δ per head, no momentum by default."""

    def __init__(self, dim: int, num_heads: int = 4, *, delta: float = 10.0, **options):
        options.setdefault("momentum", False)
        super().__init__(dim, num_heads, attentional_bias=HuberBias(delta, num_heads), **options)


@register_kernel("memora")
class Memora(NeuralMemory):
    """Miras Memora: ℓ2 bias with KL retention (softmax-normalised memory rows), no momentum by default."""

    def __init__(self, dim: int, num_heads: int = 4, **options):
        options.setdefault("momentum", False)
        super().__init__(dim, num_heads, retention=SoftmaxRead(), **options)
