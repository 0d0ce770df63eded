"""Delta rule (DeltaNet) and gated delta rule (Gated DeltaNet), recurrent and chunkwise.

Recurrence (row vectors, g_t = log-decay <= 0, g_t = 0 for the plain delta rule):
    S_t = e^{g_t} S_{t-1} + β_t k_tᵀ (v_t − e^{g_t} k_t S_{t-1}),   o_t = q_t S_t.

Chunkwise form (WY / UT transform, Yang et al. 2024 "Parallelizing Linear
Transformers with the Delta Rule over Sequence Length"; gates as in Gated
DeltaNet, Yang et al. 2025). Inside a chunk with start state S_0 and
cumulative log-decay γ_t = Σ_{i<=t} g_i, write the update as S_t = e^{g_t} S_{t-1}
+ k_tᵀ u_t. Unrolling gives, for the pseudo-values u_t,
    u_t + Σ_{i<t} β_t e^{γ_t−γ_i} (k_t·k_i) u_i = β_t v_t − β_t e^{γ_t} k_t S_0,
a unit-lower-triangular system (I + A) U = diag(β) V − diag(β e^γ) K S_0. Solving
it once per chunk for the two right-hand sides gives U = Ũ − W S_0 with Ũ, W
independent of S_0, so every chunk is processed in parallel and only
    S_next = (e^{γ_C} I − K̃ᵀ W) S_0 + K̃ᵀ Ũ,   K̃ = diag(e^{γ_C−γ}) K
runs sequentially over chunks; the outputs are then
    O = P Ũ + (diag(e^γ) Q − P W) S_0,   P = tril(Q Kᵀ ⊙ e^{γ_t−γ_i}).
Only differences γ_t − γ_i with i <= t are kept (the others are zeroed after
exp), and every exponent is clamped to [LOG_FLOOR, 0], so nothing overflows.
"""

from __future__ import annotations

import torch

from somna.kernels.chunking import LOG_FLOOR, check_inputs, from_chunks, in_segments, to_chunks


def delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    *,
    initial_state: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """S_t = S_{t-1} + β_t k_tᵀ (v_t − k_t S_{t-1}); returns (o, final state). chunk_size=None: recurrent."""
    state = check_inputs(q, k, v, per_token={"beta": beta}, initial_state=initial_state, chunk_size=chunk_size)
    return _run(q, k, v, beta, None, state, chunk_size)


def gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    log_decay: torch.Tensor,
    *,
    initial_state: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """S_t = e^{g_t} S_{t-1} + β_t k_tᵀ (v_t − e^{g_t} k_t S_{t-1}), g = log_decay <= 0; returns (o, final state)."""
    state = check_inputs(
        q, k, v, per_token={"beta": beta, "log_decay": log_decay}, initial_state=initial_state, chunk_size=chunk_size
    )
    return _run(q, k, v, beta, log_decay, state, chunk_size)


def _run(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    log_decay: torch.Tensor | None,
    state: torch.Tensor,
    chunk_size: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    if chunk_size is None:
        return _recurrent(q, k, v, beta, log_decay, state)
    return in_segments(_chunkwise, (q, k, v, beta, log_decay), state, chunk_size)


def _recurrent(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    log_decay: torch.Tensor | None,
    state: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token by token: the readable reference."""
    decays = [None] * q.shape[2] if log_decay is None else log_decay.exp().unbind(2)
    outputs = []
    for q_t, k_t, v_t, beta_t, decay_t in zip(q.unbind(2), k.unbind(2), v.unbind(2), beta.unbind(2), decays):
        if decay_t is not None:
            state = state * decay_t[..., None, None]
        prediction = (k_t.unsqueeze(-2) @ state).squeeze(-2)  # k_t S, what the memory recalls for k_t
        correction = beta_t.unsqueeze(-1) * (v_t - prediction)
        state = state + k_t.unsqueeze(-1) * correction.unsqueeze(-2)
        outputs.append((q_t.unsqueeze(-2) @ state).squeeze(-2))
    return torch.stack(outputs, dim=2), state


def _chunkwise(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    log_decay: torch.Tensor | None,
    state: torch.Tensor,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """WY-form chunkwise parallel delta rule (see the module docstring for the equations)."""
    length, d_k = q.shape[2], q.shape[3]
    q, k, v, beta = (to_chunks(x, chunk_size) for x in (q, k, v, beta))  # (B, H, N, C, ...)
    size = q.shape[3]
    causal = torch.ones(size, size, dtype=torch.bool, device=q.device).tril()
    identity_c = torch.eye(size, dtype=q.dtype, device=q.device)
    identity_k = torch.eye(d_k, dtype=q.dtype, device=q.device)

    if log_decay is None:
        decay_pairs = None  # e^{γ_t−γ_i} = 1
        key_weight, query_weight, chunk_decay = beta, None, None
        tail_keys = k
    else:
        gamma = to_chunks(log_decay, chunk_size).cumsum(dim=-1)  # (B, H, N, C)
        # e^{γ_t−γ_i} for i <= t, 0 above the diagonal; exponents clamped to [LOG_FLOOR, 0] so that exp never
        # sees −inf or returns a denormal (each 15–100× slower per element on CPU)
        pairs = (gamma.unsqueeze(-1) - gamma.unsqueeze(-2)).clamp(LOG_FLOOR, 0)
        decay_pairs = pairs.exp().masked_fill(~causal, 0.0)
        start_decay = gamma.exp()  # e^{γ_t}
        key_weight, query_weight = beta * start_decay, start_decay
        chunk_decay = start_decay[..., -1]  # e^{γ_C}
        tail_keys = k * (gamma[..., -1:] - gamma).exp().unsqueeze(-1)  # K̃ = diag(e^{γ_C−γ}) K

    key_products = k @ k.transpose(-1, -2)
    scores = q @ k.transpose(-1, -2)
    if decay_pairs is not None:
        key_products = key_products * decay_pairs
        scores = scores * decay_pairs
    lower = identity_c + (beta.unsqueeze(-1) * key_products).tril(-1)  # I + A
    rhs = torch.cat([key_weight.unsqueeze(-1) * k, beta.unsqueeze(-1) * v], dim=-1)
    solved = torch.linalg.solve_triangular(lower, rhs, upper=False, unitriangular=True)
    w, u = solved.split([d_k, v.shape[-1]], dim=-1)  # W, Ũ

    scores = scores.masked_fill(~causal, 0.0)  # P
    intra = scores @ u
    query_state = (q if query_weight is None else q * query_weight.unsqueeze(-1)) - scores @ w
    transition = -(tail_keys.transpose(-1, -2) @ w)  # e^{γ_C} I − K̃ᵀ W, identity added below
    transition = transition + (identity_k if chunk_decay is None else chunk_decay[..., None, None] * identity_k)
    chunk_updates = tail_keys.transpose(-1, -2) @ u  # K̃ᵀ Ũ

    chunk_starts = []
    for transition_n, update_n in zip(transition.unbind(2), chunk_updates.unbind(2)):
        chunk_starts.append(state)
        state = torch.baddbmm(update_n.flatten(0, 1), transition_n.flatten(0, 1), state.flatten(0, 1)).view_as(state)
    outputs = intra + query_state @ torch.stack(chunk_starts, dim=2)
    return from_chunks(outputs, length), state
