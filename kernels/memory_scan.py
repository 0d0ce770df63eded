"""The Titans inner loop, chunkwise-parallel: `memory_scan` over per-head q, k, v and gates.

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
    A_t = R_t A_0 + m_t S_0 + Σ_j K[t, j] a_jᵀ δ_j,   S_t = E_t S_0 + Σ_j Ks[t, j] a_jᵀ δ_j
with scalar chunk matrices K, Ks and vectors R, m, E (products of gates,
window mask and θ). They depend on the gates only, so `chunk_coefficients`
forms them for every chunk at once; the sequential loop over chunks does only
what needs the chunk-start weights. Reading M_t(q_t) needs no per-token
weights: each layer is
    z = R ⊙ (h A_0) + m ⊙ (h S_0) + (K ⊙ h aᵀ) δ,
an attention-like product (h A_0 and h S_0 in one matmul, the new A and S of
a layer in another). Read maps that are not the identity, and the Muon option
(A_t = ρ_t A_{t-1} − θ_t NS(S_t), momentum of the raw gradient), need the
per-token weights, which are then materialised per chunk.

`reference.py` runs the same loop token by token with autograd gradients.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from somna.kernels.chunking import LOG_FLOOR, to_chunks
from somna.kernels.newton_schulz import newton_schulz


class MemoryState(NamedTuple):
    """Everything the inner loop carries across chunks, per batch element and head."""

    weights: tuple[Tensor, ...]  # accumulators A_l (B, H, d_in, d_out); the MLP uses read(A_l)
    momentum: tuple[Tensor, ...] | None  # surprise S_l, same shapes; None without momentum
    window_k: Tensor  # (B, H, c−1, d_in): keys of the last c−1 tokens, for the Omega window (zeros before any)
    window_v: Tensor  # (B, H, c−1, d_out)
    window_w: Tensor  # (B, H, c−1): their window weights γ (0 before the first token)

    @classmethod
    def start(cls, weights: tuple[Tensor, ...], *, momentum: bool, window: int = 1) -> MemoryState:
        """The state before any token: these (B, H, d_in, d_out) weights, zero momentum, an empty window."""
        batch, heads, d_in = weights[0].shape[:3]
        empty = weights[0].new_zeros(batch, heads, window - 1, d_in)
        return cls(
            weights=weights,
            momentum=tuple(torch.zeros_like(w) for w in weights) if momentum else None,
            window_k=empty,
            window_v=weights[-1].new_zeros(batch, heads, window - 1, weights[-1].shape[-1]),
            window_w=empty[..., 0],
        )


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
    `compile=True` runs each chunk through torch.compile (see `compiled_scan_chunk`).
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
        compile: bool = False,
    ):
        super().__init__()
        if max_grad_norm is not None and max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm must be None or > 0, got {max_grad_norm!r}")
        self.max_grad_norm = max_grad_norm
        for name, value in (("chunk_size", chunk_size), ("window", window)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.chunk_size, self.window, self.muon = chunk_size, window, muon
        self.detach_inner, self.newton_schulz_steps, self.compile = detach_inner, newton_schulz_steps, compile
        self.attentional_bias = attentional_bias if attentional_bias is not None else L2Bias()
        self.retention = retention if retention is not None else IdentityRead()

    @property
    def materialize(self) -> bool:
        """Per-token weights are needed when the read map is not the identity or updates are orthogonalised."""
        return self.muon or not self.retention.identity


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


def backprop_errors(output_error: Tensor, weights: list[Tensor], inputs: list[Tensor], preacts: list[Tensor]) -> list[Tensor]:
    """δ_l = ∂ℓ/∂z_l per token, so that token j's gradient of W_l is inputs[l][j]ᵀ δ_l[j].

    σ'(z) for σ = SiLU is s + σ(z)(1 − s) with s = sigmoid(z); σ(z) is the next layer's input.
    """
    deltas = [output_error]
    for index in range(len(weights) - 1, 0, -1):
        s, silu = torch.sigmoid(preacts[index - 1]), inputs[index]
        deltas.insert(0, (deltas[0] @ weights[index].mT) * torch.addcmul(s + silu, silu, s, value=-1))
    return deltas


def clip_token_gradients(inputs: list[Tensor], deltas: list[Tensor], max_norm: float) -> list[Tensor]:
    """Scale each token's errors δ_l so that its whole gradient (all layers' a_lᵀ δ_l) has norm ≤ max_norm.

    ‖a_jᵀ δ_j‖ = ‖a_j‖·‖δ_j‖ for a rank-one gradient, so no gradient is formed.
    """
    norm = functools.partial(torch.linalg.vector_norm, dim=-1)
    squared = sum((norm(a) * norm(d)).square() for a, d in zip(inputs, deltas))
    scale = (max_norm * squared.clamp_min(1e-24).rsqrt()).clamp(max=1.0)  # clamp first: √ at 0 has no grad
    return [d * scale[..., None] for d in deltas]


class ChunkCoefficients(NamedTuple):
    """The gate products of the chunkwise form, (B, H, N, C[, span]) for N chunks; j runs over a chunk's span.

    A chunk's span is its c − 1 preceding tokens (the Omega window) and its own C.
    """

    lr: Tensor  # θ_t
    accumulator: Tensor  # K[t, j]
    surprise: Tensor  # Ks[t, j] (Muon: coefficients of the raw-gradient momentum, θ applied after NS)
    retain_start: Tensor  # R_t = Π_{s≤t} ρ_s
    momentum_start: Tensor  # m_t = Σ_s F[t, s] E_s
    surprise_start: Tensor  # E_t = Π_{s≤t} η_s (0 without momentum)
    retain_paths: Tensor  # F[t, s] = Π_{m=s+1..t} ρ_m


def segment_products(gate: Tensor | None, like: Tensor) -> tuple[Tensor, Tensor]:
    """For a (..., n) gate: D[t, s] = Π_{m=s+1..t} gate_m (s ≤ t, else 0) and P_t = Π_{m≤t} gate_m.

    gate=None means a gate of 1 (D = lower-triangular ones, P = 1). Products are
    formed as exp of differences of cumulative logs, with every exponent clamped
    to [LOG_FLOOR, 0] and the upper triangle zeroed after exp (see LOG_FLOOR).
    """
    length = like.shape[-1]
    lower = torch.ones(length, length, dtype=torch.bool, device=like.device).tril()
    if gate is None:
        return lower.to(like.dtype).expand(*like.shape, length), torch.ones_like(like)
    cumulative = gate.clamp_min(torch.finfo(gate.dtype).tiny).log().cumsum(-1)
    differences = (cumulative[..., :, None] - cumulative[..., None, :]).clamp(LOG_FLOOR, 0)
    return differences.exp().masked_fill(~lower, 0), cumulative.clamp_min(LOG_FLOOR).exp()


def chunk_coefficients(gates: Gates, prior_window: Tensor, rule: MemoryRule) -> ChunkCoefficients:
    """K, Ks, R, m, E, F of every chunk of the (B, H, T) gates; `prior_window` (B, H, c−1) are the state's γ."""
    size, window = rule.chunk_size, rule.window
    lr = to_chunks(gates.lr, size)  # (B, H, N, C), zero-padded: padded rows and columns are never used
    momentum_paths, surprise_start = segment_products(None if gates.momentum is None else to_chunks(gates.momentum, size), lr)
    if gates.momentum is None:  # no momentum: S_t = −θ_t G_t, nothing carried
        momentum_paths = torch.eye(size, dtype=lr.dtype, device=lr.device).expand_as(momentum_paths)
        surprise_start = torch.zeros_like(surprise_start)
    retain_paths, retain_start = segment_products(None if gates.retain is None else to_chunks(gates.retain, size), lr)
    own_weights = gates.window if gates.window is not None else torch.ones_like(gates.lr)
    # S_t = E_t S_0 + Σ_j Ks[t, j] g_j  (Muon keeps the momentum of the raw gradient; θ comes after NS).
    paths = momentum_paths if rule.muon else -momentum_paths * lr[..., None, :]
    if window == 1:  # the Omega mask is the diagonal: scale the columns
        surprise = paths * to_chunks(own_weights, size)[..., None, :]
    else:  # G_t = (1/c) Σ_j omega[t, j] g_j over the last c tokens (token t sits at span position c − 1 + t)
        weights = torch.cat([prior_window, own_weights], dim=-1)
        weights = F.pad(weights, (0, lr.shape[2] * size - gates.lr.shape[-1]))
        span_weights = weights.unfold(-1, size + window - 1, size)  # (B, H, N, span)
        offset = torch.arange(size + window - 1, device=lr.device)[None, :] - torch.arange(size, device=lr.device)[:, None]
        in_window = ((offset >= 0) & (offset < window)).to(lr.dtype)
        surprise = paths @ (in_window * span_weights[..., None, :] / window)
    accumulator = retain_paths @ surprise  # K = F Ks
    momentum_start = (retain_paths @ surprise_start[..., None])[..., 0]  # m = F E
    return ChunkCoefficients(lr, accumulator, surprise, retain_start, momentum_start, surprise_start, retain_paths)


def memory_scan(
    q: Tensor, k: Tensor, v: Tensor, gates: Gates, state: MemoryState, rule: MemoryRule
) -> tuple[Tensor, MemoryState]:
    """Run the inner loop over (B, H, T, d) q, k, v from `state`, chunk by chunk; returns (y, state after T)."""
    if (gates.momentum is None) != (state.momentum is None):
        raise ValueError("memory_scan: gates.momentum and state.momentum must both be given or both be None")
    length = q.shape[2]
    if length == 0:
        return q.new_zeros(*q.shape[:3], v.shape[-1]), state
    size = rule.chunk_size
    step = compiled_scan_chunk() if rule.compile else _scan_chunk
    window_w = gates.window if gates.window is not None else torch.ones_like(gates.lr)
    # Split once (split/unbind backward is one concatenation; indexing per chunk would zero-fill a full-size
    # gradient for every chunk, quadratic in the number of chunks).
    coefficients = chunk_coefficients(gates, state.window_w, rule)
    per_chunk = zip(
        *(x.split(size, dim=2) for x in (q, k, v, window_w)),
        (ChunkCoefficients(*fields) for fields in zip(*(c.unbind(2) for c in coefficients))),
    )
    outputs = []
    for q_n, k_n, v_n, window_n, coef in per_chunk:
        n = q_n.shape[2]
        if n < size:  # the last, partial chunk: its coefficients were computed zero-padded
            span = rule.window - 1 + n
            coef = ChunkCoefficients(*(c[..., :n] if c.dim() == 3 else c[..., :n, :] for c in coef))
            coef = coef._replace(
                accumulator=coef.accumulator[..., :span], surprise=coef.surprise[..., :span], retain_paths=coef.retain_paths[..., :n]
            )
        y, state = step(q_n, k_n, v_n, window_n, coef, state, rule)
        outputs.append(y)
    return torch.cat(outputs, dim=2), state


@functools.cache
def compiled_scan_chunk():
    """`_scan_chunk` through torch.compile: Inductor fuses the elementwise work around the matmuls into a few
    C++ loops (measured on CPU, one thread: forward ~1.6×, forward+backward ~1.3× at the `somna bench
    kernels` configuration), at ~40 s of compilation per new shape and direction."""
    return torch.compile(_scan_chunk, dynamic=False)


def _scan_chunk(
    q: Tensor, k: Tensor, v: Tensor, window_w: Tensor, coef: ChunkCoefficients, state: MemoryState, rule: MemoryRule
) -> tuple[Tensor, MemoryState]:
    keep = rule.window - 1
    keys = torch.cat([state.window_k, k], dim=2) if keep else k
    values = torch.cat([state.window_v, v], dim=2) if keep else v

    # Per-token gradients at the chunk-start weights, as rank-one factors a_jᵀ δ_j per layer.
    start_weights = [rule.retention.read(a) for a in state.weights]
    inputs, preacts = mlp_forward(start_weights, keys)
    deltas = backprop_errors(rule.attentional_bias.output_error(preacts[-1], values), start_weights, inputs, preacts)
    if rule.detach_inner:
        inputs, deltas = [a.detach() for a in inputs], [d.detach() for d in deltas]
    if rule.max_grad_norm is not None:
        deltas = clip_token_gradients(inputs, deltas, rule.max_grad_norm)

    if rule.materialize:
        y, new_weights, new_momentum = _materialized_chunk(q, inputs, deltas, coef, state.weights, state.momentum, rule)
    else:
        y = _read(q, inputs, deltas, coef, state.weights, state.momentum)
        new_weights, new_momentum = _chunk_end(inputs, deltas, coef, state.weights, state.momentum)
    return y, MemoryState(
        weights=new_weights,
        momentum=new_momentum,
        window_k=keys[:, :, keys.shape[2] - keep :],
        window_v=values[:, :, values.shape[2] - keep :],
        window_w=torch.cat([state.window_w, window_w], dim=2)[:, :, keys.shape[2] - keep :] if keep else state.window_w,
    )


def matmul_add(z: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """z + a @ b for (B, H, ...) batches, the addition fused into the matmul (baddbmm)."""
    return torch.baddbmm(z.flatten(0, 1), a.flatten(0, 1), b.flatten(0, 1)).view_as(z)


def _read(q: Tensor, inputs: list[Tensor], deltas: list[Tensor], coef: ChunkCoefficients, weights, momentum) -> Tensor:
    """y_t = M_{A_t}(q_t) layer by layer: z = (R ⊙ h) A_0 + (m ⊙ h) S_0 + (K ⊙ h aᵀ) δ (R, m scale rows)."""
    y = q
    for layer, a0 in enumerate(weights):
        z = (coef.retain_start[..., None] * y) @ a0
        if momentum is not None:
            z = matmul_add(z, coef.momentum_start[..., None] * y, momentum[layer])
        z = matmul_add(z, coef.accumulator * (y @ inputs[layer].mT), deltas[layer])
        y = F.silu(z) if layer < len(weights) - 1 else z
    return y


def _chunk_end(inputs: list[Tensor], deltas: list[Tensor], coef: ChunkCoefficients, weights, momentum):
    """A and S after the chunk's last token: A = R A_0 + m S_0 + aᵀ (K_last ⊙ δ), S = E S_0 + aᵀ (Ks_last ⊙ δ)."""
    last = lambda c: c[..., -1, None, None]  # noqa: E731  (B, H, 1, 1) coefficient of the last token
    new_weights, new_momentum = [], []
    for layer, a0 in enumerate(weights):
        delta, a = deltas[layer], inputs[layer].mT
        start = last(coef.retain_start) * a0
        if momentum is not None:
            start = torch.addcmul(start, last(coef.momentum_start), momentum[layer])
            new_momentum.append(matmul_add(last(coef.surprise_start) * momentum[layer], a, coef.surprise[..., -1, :, None] * delta))
        new_weights.append(matmul_add(start, a, coef.accumulator[..., -1, :, None] * delta))
    return tuple(new_weights), tuple(new_momentum) if momentum is not None else None


def _materialized_chunk(q, inputs, deltas, coef: ChunkCoefficients, weights, momentum, rule: MemoryRule):
    """The chunk with per-token weights A_t (non-identity read maps, Muon): read each token with its own weights."""

    def rank_one_sum(c: Tensor, layer: int) -> Tensor:
        return torch.einsum("bh...j,bhji,bhjo->bh...io", c, inputs[layer], deltas[layer])

    def with_start(total: Tensor, start: Tensor) -> Tensor:
        """Broadcast a (B, H[, n]) coefficient against (B, H[, n], d_in, d_out) start weights."""
        return total[..., None, None] * (start if total.dim() == 2 else start[:, :, None])

    per_token, new_momentum = [], []
    for layer, a0 in enumerate(weights):
        s0 = momentum[layer] if momentum is not None else torch.zeros_like(a0)
        if rule.muon:  # S_t for every token, orthogonalised, then A_t = R_t A_0 + Σ_s F[t, s] (−θ_s NS(S_s))
            surprise = with_start(coef.surprise_start, s0) + rank_one_sum(coef.surprise, layer)
            update = -coef.lr[..., None, None] * newton_schulz(surprise, rule.newton_schulz_steps).to(q.dtype)
            per_token.append(with_start(coef.retain_start, a0) + torch.einsum("bhts,bhsio->bhtio", coef.retain_paths, update))
            new_momentum.append(surprise[:, :, -1])
        else:
            per_token.append(
                with_start(coef.retain_start, a0) + with_start(coef.momentum_start, s0) + rank_one_sum(coef.accumulator, layer)
            )
            if momentum is not None:
                new_momentum.append(with_start(coef.surprise_start[..., -1], s0) + rank_one_sum(coef.surprise[..., -1, :], layer))
    _, preacts = mlp_forward([rule.retention.read(a) for a in per_token], q)
    return preacts[-1], tuple(a[:, :, -1] for a in per_token), tuple(new_momentum) if momentum is not None else None
