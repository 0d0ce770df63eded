"""Self-modifying Titans memory (Nested Learning eq. 79–88): the memory writes its own keys, values and gates.

Only the query projection q = x W_q is fixed. Keys, values, the learning rate
η and the retention α come from four memories of their own, and the read
memory M_mem is a fifth; each is a residual 2-layer MLP M(x) = x + σ(x W₁) W₂
with per-batch, per-head fast weights (the paper's x + W₁σ(W₂x) in row form):
    k = normalize(M_k(x̄)),  v = M_v(x̄)       (x̄: x split into heads, each L2-normalised),
    η = max_lr·sigmoid(M_η(x̄)·w_η + b_η),  α = sigmoid(M_α(x̄)·w_α + b_α)   (scalars per head)
Every memory M_□ makes its own target v̂_□ = M_□(v) (v itself for M_mem) and
learns by gradient descent with decay on L = ½‖M_□(k) − v̂_□‖²:
    W ← α W − η ∇_W L(W; k, v̂_□).
For a linear memory that is W(α I − η k kᵀ) + η kᵀ v̂, the delta-GD form of
eq. 86–88. Our choice, not the paper's: the self-made targets are
L2-normalised (v̂_□ = normalize(M_□(v))). A memory chasing its own outputs
otherwise grows without bound (measured: NaN after ~300 tokens at the
default gates); unit targets keep every memory bounded. Chunkwise (eq. 88): k, v, η, α of a chunk are produced by the
chunk-start memories and every gradient is taken at the chunk-start weights;
the within-chunk recurrence is NeuralMemory's (memory_scan), so each token
reads y_t = q_t + MLP_{W_t}(q_t) after its own write. The initial fast
weights are parameters (meta-learned by the outer loop).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from somna.kernels.neural_memory import Gates, MemoryRule, MemoryState, chunk_aligned, memory_scan, mlp_forward
from somna.platform.registry import register_kernel

MEMORIES = ("key", "value", "lr", "decay", "memory")


class SelfModifyingState(NamedTuple):
    """The five memories (in MEMORIES order) at the last chunk boundary and the unfinished chunk's inputs (B, P, dim)."""

    memories: tuple[MemoryState, ...]
    pending_x: Tensor


@register_kernel("self-modifying")
class SelfModifyingMemory(nn.Module):
    """Self-modifying Titans: k, v, η, α each from its own test-time-learned memory; options chunk_size, expansion, max_lr."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 4,
        *,
        chunk_size: int = 16,
        expansion: int = 2,
        max_lr: float = 0.5,
        detach_inner: bool = False,
    ):
        super().__init__()
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1 or dim % num_heads:
            raise ValueError(f"num_heads must be a positive int dividing dim={dim}, got {num_heads!r}")
        self.dim, self.num_heads, self.head_dim, self.max_lr = dim, num_heads, dim // num_heads, max_lr
        self.rule = MemoryRule(chunk_size=chunk_size, detach_inner=detach_inner, max_grad_norm=1.0)
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.out_proj = nn.Linear(dim, dim, bias=False)
        d, hidden = self.head_dim, expansion * self.head_dim
        self.initial_weights = nn.ParameterDict(
            {
                name: nn.ParameterList(
                    [
                        nn.Parameter(torch.randn(num_heads, d, hidden) / math.sqrt(d)),
                        nn.Parameter(0.1 * torch.randn(num_heads, hidden, d) / math.sqrt(hidden)),  # near-identity start
                    ]
                )
                for name in MEMORIES
            }
        )
        self.lr_readout = nn.Parameter(torch.randn(num_heads, d) / math.sqrt(d))
        self.lr_bias = nn.Parameter(torch.zeros(num_heads))  # η ≈ max_lr/2: see NeuralMemory on chunk stability
        self.decay_readout = nn.Parameter(torch.randn(num_heads, d) / math.sqrt(d))
        self.decay_bias = nn.Parameter(torch.full((num_heads,), 6.0))  # retention ≈ 0.9975 at the start

    def initial_state(self, batch: int) -> SelfModifyingState:
        memories = []
        for name in MEMORIES:
            weights = tuple(w.unsqueeze(0).expand(batch, *w.shape) for w in self.initial_weights[name])
            empty = weights[0].new_zeros(batch, self.num_heads, 0, self.head_dim)
            memories.append(MemoryState(weights, None, empty, empty, empty[..., 0]))
        return SelfModifyingState(tuple(memories), self.lr_bias.new_zeros(batch, 0, self.dim))

    def forward(self, x: Tensor, state: SelfModifyingState | None = None) -> tuple[Tensor, SelfModifyingState]:
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"SelfModifyingMemory expects x of shape (B, T, {self.dim}), got {tuple(x.shape)}")
        if state is None:
            state = self.initial_state(x.shape[0])
        y, memories, pending = chunk_aligned(self._scan, x, state.memories, state.pending_x, self.rule.chunk_size)
        return y, SelfModifyingState(memories, pending)

    def _scan(self, x: Tensor, memories: tuple[MemoryState, ...]) -> tuple[Tensor, tuple[MemoryState, ...]]:
        outputs = [x[:, :0]]
        for start in range(0, x.shape[1], self.rule.chunk_size):
            y, memories = self._chunk(x[:, start : start + self.rule.chunk_size], memories)
            outputs.append(y)
        return torch.cat(outputs, dim=1), memories

    def _chunk(self, x: Tensor, memories: tuple[MemoryState, ...]) -> tuple[Tensor, tuple[MemoryState, ...]]:
        states = dict(zip(MEMORIES, memories))

        def apply(name: str, inputs: Tensor) -> Tensor:
            """The chunk-start memory M_name(inputs) = inputs + MLP(inputs)."""
            return inputs + mlp_forward(list(states[name].weights), inputs)[1][-1]

        # (B, H, T, d), unit norm per head: bounded inputs keep the self-referential targets M(v) from running away
        heads = F.normalize(x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2), dim=-1)
        q = F.normalize(self.q_proj(x).unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2), dim=-1)
        k = F.normalize(apply("key", heads), dim=-1)
        v = apply("value", heads)
        lr = self.max_lr * torch.sigmoid((apply("lr", heads) * self.lr_readout[:, None]).sum(-1) + self.lr_bias[:, None])
        retain = torch.sigmoid((apply("decay", heads) * self.decay_readout[:, None]).sum(-1) + self.decay_bias[:, None])
        gates = Gates(lr, None, retain)
        new_states, read = [], None
        for name in MEMORIES:
            target = v if name == "memory" else F.normalize(apply(name, v), dim=-1)
            queries = q if name == "memory" else k
            # Residual memory: M(k) = k + MLP(k), so the MLP part fits target − k.
            y, new_state = memory_scan(queries, k, target - k, gates, states[name], self.rule)
            new_states.append(new_state)
            if name == "memory":
                read = q + y
        return self.out_proj(read.transpose(1, 2).flatten(2)), tuple(new_states)
