"""Sequence layers over the functional ops: linear attention, DeltaNet, Gated DeltaNet.

Each is a `ProjectedMemoryLayer` (see layer_base.py for the layer contract);
the chunkwise form of the op is used unless `chunk_size=None`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from somna.kernels.delta_rule import delta_rule, gated_delta_rule
from somna.kernels.layer_base import ProjectedMemoryLayer
from somna.kernels.linear_attention import linear_attention
from somna.platform.registry import register_kernel


@register_kernel("linear-attention")
class LinearAttention(ProjectedMemoryLayer):
    """Linear attention layer: memory S += k^T v, read q S (L2-normalised q, k)."""

    def mix(self, x, q, k, v, state):
        return linear_attention(q, k, v, initial_state=state, chunk_size=self.chunk_size)


@register_kernel("deltanet")
class DeltaNet(ProjectedMemoryLayer):
    """DeltaNet layer: delta-rule memory with a per-token, per-head write strength beta = sigmoid(x W_beta)."""

    def __init__(self, dim: int, num_heads: int = 4, **options):
        super().__init__(dim, num_heads, **options)
        self.beta_proj = self.scalar_gate()

    def mix(self, x, q, k, v, state):
        beta = torch.sigmoid(self.per_head(self.beta_proj, x))
        return delta_rule(q, k, v, beta, initial_state=state, chunk_size=self.chunk_size)


@register_kernel("gated-deltanet")
class GatedDeltaNet(ProjectedMemoryLayer):
    """Gated DeltaNet layer: delta rule plus a forget gate e^g, g = -softplus(x W_g + b) per token and head.

    The bias b starts at softplus⁻¹ of per-head decay rates spread log-uniformly
    over [1e-3, 1e-1] (the Mamba-2 time-step initialisation), so heads begin
    with memories lasting about 10 to 1000 tokens.
    """

    def __init__(self, dim: int, num_heads: int = 4, **options):
        super().__init__(dim, num_heads, **options)
        self.beta_proj = self.scalar_gate()
        rates = torch.logspace(math.log10(1e-3), math.log10(1e-1), self.num_heads)
        self.decay_proj = self.scalar_gate(bias=rates.expm1().log())  # softplus(bias) == rates

    def mix(self, x, q, k, v, state):
        beta = torch.sigmoid(self.per_head(self.beta_proj, x))
        log_decay = -F.softplus(self.per_head(self.decay_proj, x))
        return gated_delta_rule(q, k, v, beta, log_decay, initial_state=state, chunk_size=self.chunk_size)
