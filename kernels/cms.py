"""Continuum Memory System (Nested Learning eq. 70–74): MLP blocks that learn at test time, each at its own period.

Block ℓ reads h through a residual MLP with per-batch fast weights θ = (W_in, W_out):
    y = h + M_θ(q̂),   M_θ(u) = σ(u W_in) W_out,   q̂ = normalize(h W_q).
It keeps θ fixed for C(ℓ) tokens and then takes one step (eq. 71)
    θ ← θ − Σ_{t in the last C(ℓ) tokens} η_t clip(∇f(θ; h_t)),
all gradients at the weights the period was read with (mini-batch GD). The
error term f is the block's local objective, an associative loss
    f(θ; h_t) = ½‖M_θ(k̂_t) − h_t W_v‖²,   k̂_t = normalize(h_t W_k)
(W_q, W_k, W_v outer-loop parameters, as Titans' projections: the block stores
what a key maps to and answers a query, which is what a memory has to do; a
loss on one input, key = query, cannot bind a key token to a later query), and/or
any gradient a learner feeds in with `accumulate` (e.g. of its task loss with
respect to `state.weights`); either waits in `state.pending` until the block's
next update. Unit-norm keys bound the curvature of f. The step size is
η_t = lr·sigmoid(h_t w_ℓ + b_ℓ), learnable up to lr per token (an earlier
lr/C(ℓ) factor capped each step at ~0.01 and the outer loop could not raise
it); like NeuralMemory, each token's gradient is clipped to norm
`max_grad_norm`, which keeps a period's step bounded (C(ℓ)·lr·max_grad_norm)
whatever η the outer loop learns. η → 0 recovers the frozen MLP chain.

Variants (eq. 72–74):
  sequential  y = block_k(… block_1(x))                                    (eq. 73)
  nested      the same chain, but block ℓ restarts from its initial (meta-learned)
              weights every time block ℓ+1 updates; periods must divide each other (eq. 72)
  headwise    blocks read x in parallel: y = x + Σ_ℓ w_ℓ (block_ℓ(x) − x), w_ℓ learned (eq. 74)

`reference.py` has the same system written token by token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from somna.kernels.memory_scan import backprop_errors, clip_token_gradients, mlp_forward
from somna.platform.registry import register_kernel

VARIANTS = ("sequential", "nested", "headwise")
BlockWeights = tuple[Tensor, Tensor]  # W_in (B, dim, hidden), W_out (B, hidden, dim)


class CMSState(NamedTuple):
    """Per block: current fast weights and the update waiting for the block's next period end; tokens seen."""

    weights: tuple[BlockWeights, ...]
    pending: tuple[BlockWeights, ...]
    position: Tensor  # () int64


@register_kernel("cms")
class ContinuumMemory(nn.Module):
    """Continuum Memory System: a chain of residual MLP blocks, block ℓ updated every periods[ℓ] tokens.

    Options: periods (update period C(ℓ) per block, in tokens), expansion
    (hidden width / dim), variant (sequential | nested | headwise), lr (the
    largest η_t), max_grad_norm (per-token clipping of the local gradient;
    None: off), local_objective (False: only gradients given to `accumulate`
    update the blocks), detach_inner. `num_heads` is accepted for the layer
    contract; the blocks act on the full width.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 4,
        *,
        periods: Sequence[int] = (8, 32, 128),
        expansion: int = 2,
        variant: str = "sequential",
        lr: float = 1.0,
        max_grad_norm: float | None = 1.0,
        local_objective: bool = True,
        detach_inner: bool = False,
    ):
        super().__init__()
        periods = list(periods)
        if not periods or any(isinstance(p, bool) or not isinstance(p, int) or p < 1 for p in periods):
            raise ValueError(f"periods must be a non-empty list of positive ints, got {periods!r}")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        if variant == "nested" and any(slow % fast for fast, slow in zip(periods, periods[1:])):
            raise ValueError(f"nested CMS needs each period to divide the next, got periods={periods}")
        self.dim, self.num_heads, self.variant = dim, num_heads, variant
        if max_grad_norm is not None and max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm must be None or > 0, got {max_grad_norm!r}")
        self.periods, self.lr, self.local_objective, self.detach_inner = periods, lr, local_objective, detach_inner
        self.max_grad_norm = max_grad_norm
        hidden = expansion * dim
        self.initial_in = nn.ParameterList(nn.Parameter(torch.randn(dim, hidden) / math.sqrt(dim)) for _ in periods)
        self.initial_out = nn.ParameterList(nn.Parameter(torch.randn(hidden, dim) / math.sqrt(hidden)) for _ in periods)
        self.queries = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in periods)
        self.keys = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in periods)
        self.values = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in periods)
        self.lr_gates = nn.ModuleList(nn.Linear(dim, 1) for _ in periods)
        self.mix_weights = nn.Parameter(torch.full((len(periods),), 1 / len(periods))) if variant == "headwise" else None

    @property
    def update_periods(self) -> list[int]:
        """C(ℓ) for each block, in tokens."""
        return list(self.periods)

    def update_rule_parameters(self) -> list[nn.Parameter]:
        """The learning-rate gates η_t of every block (what a nested optimizer tunes)."""
        return [p for gate in self.lr_gates for p in gate.parameters()]

    def initial_block(self, index: int, batch: int) -> BlockWeights:
        return (
            self.initial_in[index].unsqueeze(0).expand(batch, -1, -1),
            self.initial_out[index].unsqueeze(0).expand(batch, -1, -1),
        )

    def initial_state(self, batch: int) -> CMSState:
        weights = tuple(self.initial_block(i, batch) for i in range(len(self.periods)))
        pending = tuple((torch.zeros_like(w_in), torch.zeros_like(w_out)) for w_in, w_out in weights)
        return CMSState(weights, pending, torch.zeros((), dtype=torch.long))

    def forward(self, x: Tensor, state: CMSState | None = None) -> tuple[Tensor, CMSState]:
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"ContinuumMemory expects x of shape (B, T, {self.dim}), got {tuple(x.shape)}")
        if state is None:
            state = self.initial_state(x.shape[0])
        start = int(state.position)
        weights, pending, outputs = [], [], []
        h = x
        for index in range(len(self.periods)):
            block_input = x if self.variant == "headwise" else h
            h, block_weights, block_pending = self._run_block(
                index, block_input, state.weights[index], state.pending[index], start
            )
            weights.append(block_weights)
            pending.append(block_pending)
            outputs.append(h)
        if self.variant == "headwise":
            h = x + sum(w * (out - x) for w, out in zip(self.mix_weights, outputs))
        return h, CMSState(tuple(weights), tuple(pending), state.position + x.shape[1])

    def _run_block(
        self, index: int, h: Tensor, weights: BlockWeights, pending: BlockWeights, start: int
    ) -> tuple[Tensor, BlockWeights, BlockWeights]:
        period = self.periods[index]
        parent = self.periods[index + 1] if self.variant == "nested" and index + 1 < len(self.periods) else None
        outputs, t = [], 0
        while t < h.shape[1]:
            position = start + t
            run = min(h.shape[1] - t, period - position % period)
            segment = h[:, t : t + run]
            layer_weights = [w.unsqueeze(1) for w in weights]  # a single "head" for the shared MLP helpers
            query = F.normalize(self.queries[index](segment), dim=-1).unsqueeze(1)
            outputs.append(segment + mlp_forward(layer_weights, query)[1][-1][:, 0])
            if self.local_objective:
                pending = self._add_local_gradient(index, segment, layer_weights, pending)
            t += run
            if (position + run) % period == 0:  # eq. 71: the period ends, take the accumulated step
                if parent is not None and (position + run) % parent == 0:
                    weights = self.initial_block(index, h.shape[0])  # eq. 72: restart when the slower block updates
                else:
                    weights = tuple(w - p for w, p in zip(weights, pending))
                pending = tuple(torch.zeros_like(p) for p in pending)
        y = torch.cat(outputs, dim=1) if outputs else h
        return y, weights, pending

    def _add_local_gradient(self, index: int, segment: Tensor, layer_weights: list[Tensor], pending: BlockWeights) -> BlockWeights:
        """pending + Σ_t η_t clip(∇f(θ; h_t)) over the segment's tokens, f = ½‖M_θ(k̂_t) − h_t W_v‖²."""
        key = F.normalize(self.keys[index](segment), dim=-1).unsqueeze(1)
        inputs, preacts = mlp_forward(layer_weights, key)
        deltas = backprop_errors(preacts[-1] - self.values[index](segment).unsqueeze(1), layer_weights, inputs, preacts)
        if self.detach_inner:
            inputs, deltas = [a.detach() for a in inputs], [d.detach() for d in deltas]
        if self.max_grad_norm is not None:
            deltas = clip_token_gradients(inputs, deltas, self.max_grad_norm)
        eta = self.lr * torch.sigmoid(self.lr_gates[index](segment))  # (B, run, 1)
        return tuple(p + (a[:, 0] * eta).mT @ d[:, 0] for p, a, d in zip(pending, inputs, deltas))

    def accumulate(self, state: CMSState, grads: Sequence[BlockWeights], scale: float = 1.0) -> CMSState:
        """Add external gradients (per block, shaped like `state.weights`) to the updates waiting for each period end."""
        pending = tuple(
            tuple(p + scale * g for p, g in zip(block_pending, block_grads))
            for block_pending, block_grads in zip(state.pending, grads)
        )
        return state._replace(pending=pending)

    def flush(self, state: CMSState, blocks: Sequence[int] | None = None) -> CMSState:
        """Apply the waiting updates of `blocks` (default: all) now, e.g. before a sleep phase."""
        chosen = set(range(len(self.periods)) if blocks is None else blocks)
        weights, pending = list(state.weights), list(state.pending)
        for index in chosen:
            weights[index] = tuple(w - p for w, p in zip(weights[index], pending[index]))
            pending[index] = tuple(torch.zeros_like(p) for p in pending[index])
        return state._replace(weights=tuple(weights), pending=tuple(pending))
