"""Titans blocks (Titans §4): memory as context (MAC), as gate (MAG), as layer (MAL), over NeuralMemory.

  MAC  per segment s of `segment` tokens: h = M*_{s−1}(x_s) (read, no write); attention over
       [persistent, h, x_s] (causal inside the segment; token i sees h_j for j ≤ i) gives y_s;
       then the memory is written with y_s, and o_s = x_s + y_s ⊙ σ(M_s(y_s)). The memory
       therefore changes once per segment, after attending — the returned state holds the
       memory at the last segment end; a trailing partial segment is attended and read but
       written only when the segment completes (next call). `write="input"` (the default)
       writes x_s instead of y_s and gates with M_s(x_s); see TitansMAC for why.
  MAG  o = x + SWA(x) ⊙ σ(M(x)): sliding-window attention gated by the memory branch.
  MAL  h = x + M(x), o = h + SWA(h): the memory layer in front of sliding-window attention.
Attention uses learnable persistent tokens, visible to every query. `memory` passes options to NeuralMemory.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from somna.kernels.neural_memory import NeuralMemory, NeuralMemoryState, chunk_aligned
from somna.platform.registry import register_kernel


class SlidingWindowAttention(nn.Module):
    """Causal multi-head attention over the last `window` tokens, plus persistent and optional aligned extra tokens.

    The cache holds the last window − 1 inputs, so a sequence split into pieces gives the same outputs.
    """

    def __init__(self, dim: int, num_heads: int, window: int, persistent: int = 4):
        super().__init__()
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive int, got {window!r}")
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads, self.window = num_heads, window
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.persistent = nn.Parameter(0.02 * torch.randn(persistent, dim))

    def empty_cache(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape[0], 0, x.shape[-1])

    def forward(self, x: Tensor, cache: Tensor | None = None, extra: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Attend from x (B, T, dim); `extra` (B, T, dim) are extra tokens aligned with x (MAC's memory reads):
        query i sees the persistent tokens, extra tokens j ≤ i and the last `window` inputs up to itself."""
        cache = self.empty_cache(x) if cache is None else cache
        extra = self.empty_cache(x) if extra is None else extra
        persistent = self.persistent.unsqueeze(0).expand(x.shape[0], -1, -1).to(x.dtype)
        sequence = torch.cat([cache, x], dim=1)
        projected = self.qkv(torch.cat([persistent, extra, sequence], dim=1))
        q, k, v = (self._heads(t) for t in projected.chunk(3, dim=-1))
        q = q[:, :, q.shape[2] - x.shape[1] :]
        query_pos = torch.arange(x.shape[1], device=x.device)[:, None]
        extra_pos = torch.arange(extra.shape[1], device=x.device)[None, :]
        key_pos = torch.arange(sequence.shape[1], device=x.device)[None, :] - cache.shape[1]
        in_window = (key_pos <= query_pos) & (key_pos > query_pos - self.window)
        mask = torch.cat([in_window.new_ones(x.shape[1], persistent.shape[1]), extra_pos <= query_pos, in_window], dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        new_cache = sequence[:, max(0, sequence.shape[1] - (self.window - 1)) :] if self.window > 1 else cache[:, :0]
        return self.out(y.transpose(1, 2).flatten(2)), new_cache

    def _heads(self, t: Tensor) -> Tensor:
        return t.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)


WRITES = ("attention", "input")  # what MAC writes into its memory: the paper's y_s, or the segment's input x_s


class MACState(NamedTuple):
    memory: NeuralMemoryState  # at the last segment end
    pending_x: Tensor  # (B, P, dim): inputs of the unfinished segment


@register_kernel("titans-mac")
class TitansMAC(nn.Module):
    """Titans memory-as-context block: per segment, retrieved memory tokens join attention, then the memory is written.

    write="attention" is the paper's: the memory stores the attention output y_s. The default, "input", stores
    the segment's input x_s. Measured on MQAR (one layer, no positions; training seed 100, dev sequences,
    docs/bench_recall.md): writing y_s recalls 0.017 at every load from 4 to 32 pairs (chance 0.016): the one
    attention layer never learned to carry a key and its value in y_s in a form the memory can bind; writing
    x_s recalls
    0.998 / 0.981 / 0.887 / 0.638 at 4 / 8 / 16 / 32 pairs. In a deep stack the paper's choice may pay; here
    the input is what there is to remember.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 4,
        *,
        segment: int = 16,
        persistent: int = 4,
        write: str = "input",
        memory: dict[str, Any] | None = None,
    ):
        super().__init__()
        if isinstance(segment, bool) or not isinstance(segment, int) or segment < 1:
            raise ValueError(f"segment must be a positive int, got {segment!r}")
        if write not in WRITES:
            raise ValueError(f"write must be one of {', '.join(WRITES)}, got {write!r}")
        self.segment, self.write = segment, write
        self.memory = NeuralMemory(dim, num_heads, **(memory or {}))
        self.attention = SlidingWindowAttention(dim, num_heads, window=segment, persistent=persistent)

    def initial_state(self, batch: int) -> MACState:
        memory = self.memory.initial_state(batch)
        return MACState(memory, memory.pending_x)

    def forward(self, x: Tensor, state: MACState | None = None) -> tuple[Tensor, MACState]:
        if state is None:
            state = self.initial_state(x.shape[0])
        y, memory, pending = chunk_aligned(self._segments, x, state.memory, state.pending_x, self.segment)
        return y, MACState(memory, pending)

    def _segments(self, x: Tensor, memory: NeuralMemoryState) -> tuple[Tensor, NeuralMemoryState]:
        outputs = [x[:, :0]]
        for start in range(0, x.shape[1], self.segment):
            out, memory, _ = self.segment_step(x[:, start : start + self.segment], memory)
            outputs.append(out)
        return torch.cat(outputs, dim=1), memory

    def segment_step(self, x: Tensor, memory: NeuralMemoryState) -> tuple[Tensor, NeuralMemoryState, Tensor]:
        """One segment: read the memory, attend, then write (the attention output, or x); returns (o, memory, y)."""
        retrieved = self.memory.retrieve(x, memory)
        y, _ = self.attention(x, extra=retrieved)
        read, memory = self.memory(y if self.write == "attention" else x, memory)
        return x + y * torch.sigmoid(read), memory, y


class WindowedState(NamedTuple):
    memory: NeuralMemoryState
    attention_cache: Tensor  # (B, ≤ window − 1, dim)


class _WindowedTitans(nn.Module):
    """Shared construction of MAG and MAL: a NeuralMemory and a sliding-window attention."""

    def __init__(self, dim: int, num_heads: int = 4, *, window: int = 16, persistent: int = 4, memory: dict[str, Any] | None = None):
        super().__init__()
        self.memory = NeuralMemory(dim, num_heads, **(memory or {}))
        self.attention = SlidingWindowAttention(dim, num_heads, window=window, persistent=persistent)

    def initial_state(self, batch: int) -> WindowedState:
        memory = self.memory.initial_state(batch)
        return WindowedState(memory, memory.pending_x)


@register_kernel("titans-mag")
class TitansMAG(_WindowedTitans):
    """Titans memory-as-gate block: sliding-window attention gated elementwise by the memory branch."""

    def forward(self, x: Tensor, state: WindowedState | None = None) -> tuple[Tensor, WindowedState]:
        state = self.initial_state(x.shape[0]) if state is None else state
        attended, cache = self.attention(x, state.attention_cache)
        read, memory = self.memory(x, state.memory)
        return x + attended * torch.sigmoid(read), WindowedState(memory, cache)


@register_kernel("titans-mal")
class TitansMAL(_WindowedTitans):
    """Titans memory-as-layer block: neural memory layer, then sliding-window attention."""

    def forward(self, x: Tensor, state: WindowedState | None = None) -> tuple[Tensor, WindowedState]:
        state = self.initial_state(x.shape[0]) if state is None else state
        read, memory = self.memory(x, state.memory)
        h = x + read
        attended, cache = self.attention(h, state.attention_cache)
        return h + attended, WindowedState(memory, cache)
