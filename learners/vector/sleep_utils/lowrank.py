"""Pre-allocated, masked low-rank experts: capacity that a sleep unlocks without changing the function.

PAPERS.md (Language Models Need Sleep, parameter expansion): a block gets one
new low-rank expert (A: d x r, B: r x d) per sleep; the parameters exist from
the start and stay masked until unlocked, so the parameter count never changes
and a checkpoint has the same tensors before and after growth. The paper does
not state how A and B start; we draw A ~ N(0, 1/d) and set B = 0, so the
expert's output (h A) B is exactly zero when it is unlocked (function-preserving
growth) while its gradient with respect to B is not.
"""

from __future__ import annotations

import torch
from torch import nn


class MaskedLowRankExperts(nn.Module):
    """Residual experts on a d-dim representation: h -> h + sum over unlocked e of (h A_e) B_e."""

    def __init__(self, dim: int, num_experts: int, rank: int):
        super().__init__()
        if num_experts < 0 or rank < 1:
            raise ValueError(f"low-rank experts need num_experts >= 0 and rank >= 1, got {num_experts}, {rank}")
        self.A = nn.ParameterList(nn.Parameter(torch.zeros(dim, rank)) for _ in range(num_experts))
        self.B = nn.ParameterList(nn.Parameter(torch.zeros(rank, dim)) for _ in range(num_experts))
        self.register_buffer("active", torch.zeros(num_experts, dtype=torch.bool))

    @property
    def num_active(self) -> int:
        return int(self.active.sum())

    @property
    def capacity(self) -> int:
        return self.active.numel()

    def unlock(self, generator: torch.Generator) -> int:
        """Activate the next masked expert (function-preserving) and return its index."""
        index = self.num_active
        if index >= self.capacity:
            raise ValueError(f"all {self.capacity} pre-allocated low-rank experts are already unlocked")
        with torch.no_grad():
            A = self.A[index]
            A.copy_(torch.randn(A.shape, generator=generator) / A.shape[0] ** 0.5)
            self.B[index].zero_()
            self.active[index] = True
        return index

    def expert_parameters(self, index: int) -> list[nn.Parameter]:
        return [self.A[index], self.B[index]]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = h
        for index in torch.nonzero(self.active).flatten().tolist():
            out = out + (h @ self.A[index]) @ self.B[index]
        return out
