"""Causal linear attention: the memory S accumulates outer products k_tᵀ v_t.

S_t = S_{t-1} + k_tᵀ v_t,  o_t = q_t S_t  (Katharopoulos et al. 2020, row vectors).
The chunkwise form splits time into chunks of C tokens: inside a chunk the
outputs are a masked (causal) attention matmul, across chunks the chunk-start
states are a prefix sum of the per-chunk k^T v — no sequential loop at all.
"""

from __future__ import annotations

import torch

from somna.kernels.chunking import check_inputs, from_chunks, in_segments, to_chunks


def linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    initial_state: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (o: (B, H, T, d_v), final state: (B, H, d_k, d_v)); chunk_size=None is the recurrent form."""
    state = check_inputs(q, k, v, initial_state=initial_state, chunk_size=chunk_size)
    if chunk_size is None:
        return _recurrent(q, k, v, state)
    return in_segments(_chunkwise, (q, k, v), state, chunk_size)


def _recurrent(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    outputs = []
    for q_t, k_t, v_t in zip(q.unbind(2), k.unbind(2), v.unbind(2)):
        state = state + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
        outputs.append((q_t.unsqueeze(-2) @ state).squeeze(-2))
    return torch.stack(outputs, dim=2), state


def _chunkwise(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: torch.Tensor, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    length = q.shape[2]
    q, k, v = (to_chunks(x, chunk_size) for x in (q, k, v))  # (B, H, N, C, d)
    scores = (q @ k.transpose(-1, -2)).tril()  # causal within the chunk, diagonal included
    chunk_updates = k.transpose(-1, -2) @ v  # (B, H, N, d_k, d_v): each chunk's sum of k_tᵀ v_t
    totals = chunk_updates.cumsum(dim=2)
    chunk_starts = state.unsqueeze(2) + totals - chunk_updates  # exclusive prefix sum
    outputs = scores @ v + q @ chunk_starts
    return from_chunks(outputs, length), state + totals[:, :, -1]
