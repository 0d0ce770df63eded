"""Titans neural long-term memory: an MLP whose weights learn at test time, chunkwise-parallel.

The layer around the inner loop of memory_scan.py (Titans eq. 13–18): per-head
q, k, v projections, data-dependent gates θ_t, η_t, α_t from x, and the
initial memory weights as parameters, so an outer loop learns them all.

Module state: the memory at the last chunk boundary plus the tokens of the
unfinished chunk, which the next call prepends and recomputes. That is what
makes one call equal to consecutive pieces for any split, while tokens of an
unfinished chunk (even a sequence shorter than one chunk) already read an
updated memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from somna.kernels.layer_base import ProjectedMemoryLayer
from somna.kernels.memory_scan import Gates, MemoryRule, MemoryState, memory_scan, mlp_forward
from somna.platform.registry import register_kernel


def chunk_aligned(
    step: Callable[[Tensor, Any], tuple[Tensor, Any]], x: Tensor, state: Any, pending: Tensor, chunk_size: int
) -> tuple[Tensor, Any, Tensor]:
    """Run `step` (which must start at a chunk boundary) so that any split of a sequence gives the same result.

    `state` is the state at the last chunk boundary and `pending` (B, P, ...)
    the inputs seen since. They are prepended to x; complete chunks commit a
    new boundary state, the unfinished tail is run from it (its outputs read
    the tail's own updates) and kept as the new pending inputs, to be
    recomputed next call. Returns (y for x, committed state, new pending).
    """
    seen = pending.shape[1]
    x = torch.cat([pending, x], dim=1)
    boundary = x.shape[1] // chunk_size * chunk_size
    y_head, committed = step(x[:, :boundary], state)
    y_tail, _ = step(x[:, boundary:], committed)
    return torch.cat([y_head, y_tail], dim=1)[:, seen:], committed, x[:, boundary:]


class NeuralMemoryState(NamedTuple):
    """Layer state: the memory at the last chunk boundary and the inputs (B, P, dim) of the unfinished chunk."""

    memory: MemoryState
    pending_x: Tensor


@register_kernel("titans")
class NeuralMemory(ProjectedMemoryLayer):
    """Titans neural memory layer: per-head MLP memory learning at test time (momentum, forget gate), chunkwise.

    Options: depth (1 = linear memory), expansion (hidden width / head_dim),
    chunk_size, momentum, forget, lr (a constant θ; default: data-dependent
    θ_t = max_lr·sigmoid(x w_θ)), window (Omega rule c), muon, feature_map
    (a module with `out_dim(d)` applied to q and k), attentional_bias and
    retention (see miras.py), detach_inner, max_grad_norm (per-token inner
    gradient clipping; None: off), compile (torch.compile each chunk step). Every gate is a projection of x and
    the initial memory weights are parameters, so an outer loop can learn them.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 4,
        *,
        depth: int = 2,
        expansion: int = 2,
        chunk_size: int = 16,
        momentum: bool = True,
        forget: bool = True,
        lr: float | None = None,
        max_lr: float = 0.5,
        window: int = 1,
        muon: bool = False,
        feature_map: nn.Module | None = None,
        attentional_bias: nn.Module | None = None,
        retention: nn.Module | None = None,
        detach_inner: bool = False,
        max_grad_norm: float | None = 1.0,
        compile: bool = False,
        head_dim: int | None = None,
    ):
        super().__init__(dim, num_heads, head_dim=head_dim, chunk_size=chunk_size)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive int, got {depth!r}")
        if lr is not None and lr < 0:
            raise ValueError(f"lr must be None (data-dependent) or >= 0, got {lr!r}")
        if max_lr <= 0:
            raise ValueError(f"max_lr must be > 0, got {max_lr!r}")
        self.rule = MemoryRule(
            chunk_size=chunk_size,
            window=window,
            muon=muon,
            attentional_bias=attentional_bias,
            retention=retention,
            detach_inner=detach_inner,
            max_grad_norm=max_grad_norm,
            compile=compile,
        )
        self.feature_map = feature_map
        d_in = feature_map.out_dim(self.head_dim) if feature_map is not None else self.head_dim
        widths = [d_in] + [expansion * self.head_dim] * (depth - 1) + [self.head_dim]
        self.initial_weights = nn.ParameterList(
            nn.Parameter(torch.randn(num_heads, fan_in, fan_out) / math.sqrt(fan_in))
            for fan_in, fan_out in zip(widths[:-1], widths[1:])
        )
        self.constant_lr, self.max_lr = lr, max_lr
        # θ ≈ max_lr/2 and η ≈ 1/2 at the start. Inside a chunk every step uses the chunk-start gradient, so the
        # chunk moves the memory by about C·θ/(1 − η) gradients; past ~2 that diverges (measured: NaN in MQAR
        # training at θ ≤ 0.1, η → 0.9) unless max_grad_norm bounds each token's gradient, which it does by default.
        # Measured on MQAR (200 steps, 4 pairs): max_lr 0.1 → 2% recall, 0.5 → 83%, 1.0 → 73%.
        self.lr_proj = self.scalar_gate(bias=torch.zeros(num_heads)) if lr is None else None
        self.momentum_proj = self.scalar_gate(bias=torch.zeros(num_heads)) if momentum else None
        self.forget_proj = self.scalar_gate(bias=torch.full((num_heads,), -6.0)) if forget else None  # α ≈ 0.0025
        self.window_proj = self.scalar_gate(bias=torch.full((num_heads,), 2.0)) if window > 1 else None

    def gates(self, x: Tensor) -> Gates:
        """Data-dependent θ_t, η_t, 1 − α_t, γ_t from x (B, T, dim), each (B, H, T)."""

        def sigmoid_gate(projection: nn.Linear | None) -> Tensor | None:
            return None if projection is None else torch.sigmoid(self.per_head(projection, x))

        if self.lr_proj is None:
            lr = x.new_full((x.shape[0], self.num_heads, x.shape[1]), float(self.constant_lr))
        else:
            lr = self.max_lr * sigmoid_gate(self.lr_proj)
        forget = sigmoid_gate(self.forget_proj)
        return Gates(lr, sigmoid_gate(self.momentum_proj), None if forget is None else 1 - forget, sigmoid_gate(self.window_proj))

    def initial_state(self, batch: int) -> NeuralMemoryState:
        weights = tuple(w.unsqueeze(0).expand(batch, *w.shape) for w in self.initial_weights)
        memory = MemoryState.start(weights, momentum=self.momentum_proj is not None, window=self.rule.window)
        return NeuralMemoryState(memory, weights[0].new_zeros(batch, 0, self.dim))

    def forward(self, x: Tensor, state: NeuralMemoryState | None = None) -> tuple[Tensor, NeuralMemoryState]:
        if state is None:
            state = self.initial_state(x.shape[0])
        y, memory, pending = chunk_aligned(super().forward, x, state.memory, state.pending_x, self.rule.chunk_size)
        return y, NeuralMemoryState(memory, pending)

    def mix(self, x: Tensor, q: Tensor, k: Tensor, v: Tensor, state: MemoryState) -> tuple[Tensor, MemoryState]:
        if self.feature_map is not None:
            q, k = self.feature_map(q), self.feature_map(k)
        return memory_scan(q, k, v, self.gates(x), state, self.rule)

    def current_memory(self, state: NeuralMemoryState) -> MemoryState:
        """The memory after every token seen so far, including the unfinished chunk's."""
        return super().forward(state.pending_x, state.memory)[1]

    def retrieve(self, x: Tensor, state: NeuralMemoryState | None = None) -> Tensor:
        """Read M*(q) with the current memory and no update (Titans' retrieval; MAC's memory tokens)."""
        memory = self.current_memory(state) if state is not None else self.initial_state(x.shape[0]).memory
        q = F.normalize(self.split_heads(self.q_proj(x)), dim=-1)
        if self.feature_map is not None:
            q = self.feature_map(q)
        _, preacts = mlp_forward([self.rule.retention.read(a) for a in memory.weights], q)
        return self.out_proj(preacts[-1].transpose(1, 2).flatten(2))
