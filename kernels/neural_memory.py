"""Titans neural long-term memory: an MLP whose weights learn at test time, chunkwise-parallel.

Inner loop (Titans eq. 13–14, row vectors, per batch element and head): the
memory M (an MLP, weights W_1..W_L, M(k) = σ(…σ(k W_1)…) W_L) takes, at token t,
    S_t = η_t S_{t-1} − θ_t G_t              (momentum, "surprise")
    A_t = ρ_t A_{t-1} + S_t                  (ρ_t = 1 − α_t, the forget gate)
    y_t = M_{read(A_t)}(q_t)                 (read after writing token t)
with G_t the gradient of the attentional bias ℓ(M(k); v) (½‖M(k) − v‖² by
default). `read` is the retention's read map (identity for Titans; Miras
variants normalise, see miras.py). ATLAS's Omega rule replaces G_t by
(1/c) Σ_{i=t−c+1..t} γ_i ∇ℓ(M; k_i, v_i), a sliding window of the last c
tokens (averaged, so the stable θ does not shrink with c); c = 1 is the online
rule above.

Chunkwise form (Titans eq. 16–18): inside a chunk every gradient is taken at
the chunk-start weights, so mini-batch GD from the chunk start. Each token's
gradient of a weight matrix is rank one, ∇W_l = a_{l-1}ᵀ δ_l (layer input times
back-propagated error), and momentum and decay are linear recurrences, so
    A_t = R_t A_0 + m_t S_0 + Σ_j K[t, j] a_jᵀ δ_j
with scalar chunk matrices K (products of gates, window mask and θ). Reading
M_t(q_t) then needs no per-token weights: each layer is
    z = R (h A_0) + m (h S_0) + (K ⊙ h aᵀ) δ,
an attention-like product. Read maps that are not the identity, and the Muon
option (A_t = ρ_t A_{t-1} − θ_t NS(S_t), momentum of the raw gradient), need the
per-token weights, which are then materialised per chunk.

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
from somna.kernels.newton_schulz import newton_schulz
from somna.platform.registry import register_kernel


class MemoryState(NamedTuple):
    """Everything the inner loop carries across chunks, per batch element and head."""

    weights: tuple[Tensor, ...]  # accumulators A_l (B, H, d_in, d_out); the MLP uses read(A_l)
    momentum: tuple[Tensor, ...] | None  # surprise S_l, same shapes; None without momentum
    window_k: Tensor  # (B, H, ≤ c−1, d_in): keys of the last tokens, for the Omega window
    window_v: Tensor  # (B, H, ≤ c−1, d_out)
    window_w: Tensor  # (B, H, ≤ c−1): their window weights γ


class Gates(NamedTuple):
    """Per-token inner-loop gates, each (B, H, T): θ, η (None: no momentum), ρ = 1 − α (None: no forgetting), γ."""

    lr: Tensor
    momentum: Tensor | None = None
    retain: Tensor | None = None
    window: Tensor | None = None


class L2Bias(nn.Module):
    """Titans' attentional bias ½‖M(k) − v‖²; output_error returns ∂ℓ/∂M(k)."""

    def output_error(self, prediction: Tensor, target: Tensor) -> Tensor:
        return prediction - target


class IdentityRead(nn.Module):
    """Titans' retention read map: the MLP uses the accumulated weights as they are."""

    identity = True

    def read(self, accumulator: Tensor) -> Tensor:
        return accumulator


class MemoryRule(nn.Module):
    """How the inner loop learns: attentional bias, retention read map, chunk size, Omega window, Muon.

    `max_grad_norm` clips each token's gradient (all layers together) to that
    norm: then the memory moves at most θ·max_grad_norm/(1 − η) per token
    and cannot blow up, whatever gates an outer loop learns (without it the
    chunk-start gradients diverge once C·θ/(1 − η) ≳ 2).
    `detach_inner=True` treats the inner gradients as constants (first-order
    meta-learning: the gates and initial weights still learn, keys and values
    get no outer gradient); by default an outer loss differentiates through them.
    """

    def __init__(
        self,
        *,
        chunk_size: int = 16,
        window: int = 1,
        muon: bool = False,
        attentional_bias: nn.Module | None = None,
        retention: nn.Module | None = None,
        detach_inner: bool = False,
        newton_schulz_steps: int = 5,
        max_grad_norm: float | None = None,
    ):
        super().__init__()
        if max_grad_norm is not None and max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm must be None or > 0, got {max_grad_norm!r}")
        self.max_grad_norm = max_grad_norm
        for name, value in (("chunk_size", chunk_size), ("window", window)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.chunk_size, self.window, self.muon = chunk_size, window, muon
        self.detach_inner, self.newton_schulz_steps = detach_inner, newton_schulz_steps
        self.attentional_bias = attentional_bias if attentional_bias is not None else L2Bias()
        self.retention = retention if retention is not None else IdentityRead()

    @property
    def materialize(self) -> bool:
        """Per-token weights are needed when the read map is not the identity or updates are orthogonalised."""
        return self.muon or not self.retention.identity


def silu_derivative(z: Tensor) -> Tensor:
    s = torch.sigmoid(z)
    return s * (1 + z * (1 - s))


def mlp_forward(weights: list[Tensor], x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Run the memory MLP; returns each layer's input and pre-activation (the last one is the output).

    Weights are (B, H, d_in, d_out) shared by all tokens, or (B, H, T, d_in, d_out) per token.
    """
    inputs, preacts = [], []
    h = x
    for index, weight in enumerate(weights):
        inputs.append(h)
        z = h @ weight if weight.dim() == 4 else torch.einsum("bhti,bhtio->bhto", h, weight)
        preacts.append(z)
        h = F.silu(z) if index < len(weights) - 1 else z
    return inputs, preacts


def backprop_errors(output_error: Tensor, weights: list[Tensor], preacts: list[Tensor]) -> list[Tensor]:
    """δ_l = ∂ℓ/∂z_l per token, so that token j's gradient of W_l is inputs[l][j]ᵀ δ_l[j]."""
    deltas = [output_error]
    for index in range(len(weights) - 1, 0, -1):
        deltas.insert(0, (deltas[0] @ weights[index].mT) * silu_derivative(preacts[index - 1]))
    return deltas


def segment_products(gate: Tensor | None, length: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """For a (B, H, n) gate: D[t, s] = Π_{m=s+1..t} gate_m (s ≤ t, else 0) and P_t = Π_{m≤t} gate_m.

    gate=None means a gate of 1 (D = lower-triangular ones, P = 1). Products are
    formed as exp of differences of cumulative logs, masked before exp so every
    exponent is ≤ 0.
    """
    lower = torch.ones(length, length, dtype=torch.bool, device=like.device).tril()
    if gate is None:
        return lower.to(like.dtype).expand(*like.shape[:2], length, length), like.new_ones(*like.shape[:2], length)
    cumulative = gate.clamp_min(torch.finfo(gate.dtype).tiny).log().cumsum(-1)
    differences = (cumulative[..., :, None] - cumulative[..., None, :]).masked_fill(~lower, -math.inf)
    return differences.exp(), cumulative.exp()


def memory_scan(
    q: Tensor, k: Tensor, v: Tensor, gates: Gates, state: MemoryState, rule: MemoryRule
) -> tuple[Tensor, MemoryState]:
    """Run the inner loop over (B, H, T, d) q, k, v from `state`, chunk by chunk; returns (y, state after T)."""
    if (gates.momentum is None) != (state.momentum is None):
        raise ValueError("memory_scan: gates.momentum and state.momentum must both be given or both be None")
    outputs = []
    for start in range(0, q.shape[2], rule.chunk_size):
        piece = slice(start, start + rule.chunk_size)
        chunk_gates = Gates(*(None if g is None else g[:, :, piece] for g in gates))
        y, state = _scan_chunk(q[:, :, piece], k[:, :, piece], v[:, :, piece], chunk_gates, state, rule)
        outputs.append(y)
    if not outputs:
        return q.new_zeros(*q.shape[:3], v.shape[-1]), state
    return torch.cat(outputs, dim=2), state


def _scan_chunk(q: Tensor, k: Tensor, v: Tensor, gates: Gates, state: MemoryState, rule: MemoryRule):
    n = q.shape[2]
    window_w = gates.window if gates.window is not None else q.new_ones(q.shape[:3])
    keys = torch.cat([state.window_k, k], dim=2)
    values = torch.cat([state.window_v, v], dim=2)
    key_weights = torch.cat([state.window_w, window_w], dim=2)
    span = keys.shape[2]

    # Per-token gradients at the chunk-start weights, as rank-one factors a_jᵀ δ_j per layer.
    start_weights = [rule.retention.read(a) for a in state.weights]
    inputs, preacts = mlp_forward(start_weights, keys)
    deltas = backprop_errors(rule.attentional_bias.output_error(preacts[-1], values), start_weights, preacts)
    if rule.detach_inner:
        inputs, deltas = [a.detach() for a in inputs], [d.detach() for d in deltas]
    if rule.max_grad_norm is not None:  # ‖a_jᵀ δ_j‖ = ‖a_j‖·‖δ_j‖ for a rank-one gradient
        squared = sum(a.pow(2).sum(-1) * d.pow(2).sum(-1) for a, d in zip(inputs, deltas))
        scale = (rule.max_grad_norm / squared.clamp_min(1e-24).sqrt()).clamp(max=1.0)  # clamp first: √ at 0 has no grad
        deltas = [d * scale[..., None] for d in deltas]

    # Omega window: G_t = (1/c) Σ_j omega[t, j] g_j over the last c = `rule.window` tokens (token t sits at
    # span − n + t); averaging rather than summing keeps the stable step size independent of c.
    token_pos = torch.arange(n, device=q.device)[:, None] + (span - n)
    key_pos = torch.arange(span, device=q.device)[None, :]
    in_window = (key_pos <= token_pos) & (key_pos > token_pos - rule.window)
    omega = in_window.to(q.dtype) * key_weights[..., None, :] / rule.window

    momentum_paths, momentum_total = segment_products(gates.momentum, n, q)
    if gates.momentum is None:  # no momentum: S_t = −θ_t G_t, nothing carried
        momentum_paths = torch.eye(n, dtype=q.dtype, device=q.device).expand_as(momentum_paths)
        momentum_total = torch.zeros_like(momentum_total)
    retain_paths, retain_total = segment_products(gates.retain, n, q)
    lr = gates.lr[..., None, :]
    # S_t = E_t S_0 + Σ_j Ks[t, j] g_j  (Muon keeps the momentum of the raw gradient; θ comes after NS).
    surprise_coef = (momentum_paths if rule.muon else -momentum_paths * lr) @ omega

    def rank_one_sum(coef: Tensor, layer: int) -> Tensor:
        return torch.einsum("bh...j,bhji,bhjo->bh...io", coef, inputs[layer], deltas[layer])

    def with_start(total: Tensor, start: Tensor) -> Tensor:
        """Broadcast a (B, H[, n]) coefficient against (B, H[, n], d_in, d_out) start weights."""
        return total[..., None, None] * (start if total.dim() == 2 else start[:, :, None])

    momentum0 = state.momentum or tuple(torch.zeros_like(a) for a in state.weights)
    new_momentum = None
    if state.momentum is not None:
        new_momentum = tuple(
            with_start(momentum_total[..., -1], s0) + rank_one_sum(surprise_coef[..., -1, :], layer)
            for layer, s0 in enumerate(state.momentum)
        )
    if rule.muon:
        per_token = []
        for layer, (a0, s0) in enumerate(zip(state.weights, momentum0)):
            surprise = with_start(momentum_total, s0) + rank_one_sum(surprise_coef, layer)
            update = -gates.lr[..., None, None] * newton_schulz(surprise, rule.newton_schulz_steps).to(q.dtype)
            per_token.append(with_start(retain_total, a0) + torch.einsum("bhts,bhsio->bhtio", retain_paths, update))
        y = _read_per_token(per_token, q, rule)
        new_weights = tuple(a[:, :, -1] for a in per_token)
    else:
        # A_t = R_t A_0 + m_t S_0 + Σ_j K[t, j] g_j with K = F Ks, m = F E.
        accumulator_coef = retain_paths @ surprise_coef
        start_momentum_coef = (retain_paths @ momentum_total[..., None])[..., 0]
        new_weights = tuple(
            with_start(retain_total[..., -1], a0)
            + with_start(start_momentum_coef[..., -1], s0)
            + rank_one_sum(accumulator_coef[..., -1, :], layer)
            for layer, (a0, s0) in enumerate(zip(state.weights, momentum0))
        )
        if rule.materialize:
            per_token = [
                with_start(retain_total, a0) + with_start(start_momentum_coef, s0) + rank_one_sum(accumulator_coef, layer)
                for layer, (a0, s0) in enumerate(zip(state.weights, momentum0))
            ]
            y = _read_per_token(per_token, q, rule)
        else:
            y = q
            for layer, (a0, s0) in enumerate(zip(state.weights, momentum0)):
                z = retain_total[..., None] * (y @ a0) + (accumulator_coef * (y @ inputs[layer].mT)) @ deltas[layer]
                if state.momentum is not None:
                    z = z + start_momentum_coef[..., None] * (y @ s0)
                y = F.silu(z) if layer < len(state.weights) - 1 else z

    keep = rule.window - 1
    new_state = MemoryState(
        weights=new_weights,
        momentum=new_momentum,
        window_k=keys[:, :, span - min(keep, span) :],
        window_v=values[:, :, span - min(keep, span) :],
        window_w=key_weights[:, :, span - min(keep, span) :],
    )
    return y, new_state


def _read_per_token(accumulators: list[Tensor], q: Tensor, rule: MemoryRule) -> Tensor:
    _, preacts = mlp_forward([rule.retention.read(a) for a in accumulators], q)
    return preacts[-1]


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
    gradient clipping; None: off). Every gate is a projection of x and
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
        d_in, d_out = weights[0].shape[-2], weights[-1].shape[-1]
        reference = weights[0]
        memory = MemoryState(
            weights=weights,
            momentum=tuple(torch.zeros_like(w) for w in weights) if self.momentum_proj is not None else None,
            window_k=reference.new_zeros(batch, self.num_heads, 0, d_in),
            window_v=reference.new_zeros(batch, self.num_heads, 0, d_out),
            window_w=reference.new_zeros(batch, self.num_heads, 0),
        )
        return NeuralMemoryState(memory, reference.new_zeros(batch, 0, self.dim))

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
