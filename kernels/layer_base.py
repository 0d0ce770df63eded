"""Shared plumbing for sequence layers that read and write a (B, H, d_k, d_v) memory.

Layer contract (the recall benchmark and other layers rely on it):
    layer = Cls(dim, num_heads=4, **options)
    y, state = layer(x, state=None)      # x, y: (B, T, dim)
and running a sequence in one call equals running it in consecutive pieces
while passing `state` along. `ProjectedMemoryLayer` implements everything but
the memory itself: per-head q/k/v projections (q and k L2-normalised here,
because the functional ops never normalise), per-head scalar gates
(`scalar_gate`), and the output projection. A subclass only writes `mix`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProjectedMemoryLayer(nn.Module):
    """Base layer: x -> per-head q, k, v -> `mix` (the memory op) -> output projection."""

    def __init__(self, dim: int, num_heads: int = 4, *, head_dim: int | None = None, chunk_size: int | None = 64):
        super().__init__()
        for name, value in (("dim", dim), ("num_heads", num_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if head_dim is None:
            if dim % num_heads:
                raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}; pass head_dim explicitly")
            head_dim = dim // num_heads
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be None (recurrent form) or a positive int, got {chunk_size!r}")
        self.dim, self.num_heads, self.head_dim, self.chunk_size = dim, num_heads, head_dim, chunk_size
        inner = num_heads * head_dim
        self.q_proj = nn.Linear(dim, inner, bias=False)
        self.k_proj = nn.Linear(dim, inner, bias=False)
        self.v_proj = nn.Linear(dim, inner, bias=False)
        self.out_proj = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"{type(self).__name__} expects x of shape (B, T, {self.dim}), got {tuple(x.shape)}")
        q = F.normalize(self.split_heads(self.q_proj(x)), dim=-1)
        k = F.normalize(self.split_heads(self.k_proj(x)), dim=-1)
        v = self.split_heads(self.v_proj(x))
        o, state = self.mix(x, q, k, v, state)
        return self.out_proj(o.transpose(1, 2).flatten(2)), state

    def mix(
        self, x: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Read/write the memory: (B, H, T, d) q, k, v -> (o: (B, H, T, d_v), new state). `x` feeds gates."""
        raise NotImplementedError

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, H * d) -> (B, H, T, d)."""
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def scalar_gate(self, bias: torch.Tensor | None = None) -> nn.Linear:
        """A projection x -> one raw scalar per head (apply it with `per_head`); `bias` sets its initial bias."""
        projection = nn.Linear(self.dim, self.num_heads)
        if bias is not None:
            with torch.no_grad():
                projection.bias.copy_(bias)
        return projection

    @staticmethod
    def per_head(projection: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        """(B, T, dim) -> (B, H, T) raw gate values."""
        return projection(x).transpose(1, 2)
