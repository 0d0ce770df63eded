"""Self-modifying Titans memory (Nested Learning eq. 79–88): the memory writes its own keys, values and gates.

Only the query projection q = x W_q is fixed. Keys, values, the learning rate
η and the retention α come from four memories of their own, and the read
memory M_mem is a fifth; each is a residual 2-layer MLP M(x) = x + σ(x W₁) W₂
with per-batch, per-head fast weights (the paper's x + W₁σ(W₂x) in row form):
    k = normalize(M_k(x̄_k)),  v = M_v(x̄_v),
    η = max_lr·sigmoid(M_η(x̄_η)·w_η + b_η),  α = sigmoid(M_α(x̄_α)·w_α + b_α)   (scalars per head)
where x̄_□ = normalize(x P_□) per head: each memory reads the full-width x
through its own input projection P_□ (eq. 79–81 give every memory x itself).
Without them (x̄ = one head's slice of raw x for all four) the residual
memories start near the identity, so k ≈ v (cosine 0.98 at init) and the
write target v̂ − k carries no key→value information: MQAR recall stayed near
chance (4 pairs: 0.04).
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

from somna.kernels.memory_scan import Gates, MemoryRule, MemoryState, memory_scan, mlp_forward
from somna.kernels.neural_memory import chunk_aligned
from somna.platform.registry import register_kernel

MEMORIES = ("key", "value", "lr", "decay", "memory")
GENERATED = MEMORIES[:-1]  # the memories that generate k, v, η, α from x


class SelfModifyingState(NamedTuple):
    """The five memories (MEMORIES order, stacked along the head axis: (B, 5·H, ...)) at the last chunk boundary,
    and the unfinished chunk's inputs (B, P, dim)."""

    memories: MemoryState
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
        self.input_proj = nn.ModuleDict({name: nn.Linear(dim, dim, bias=False) for name in GENERATED})
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
        weights = tuple(
            torch.cat([self.initial_weights[name][layer] for name in MEMORIES]).unsqueeze(0).expand(batch, -1, -1, -1)
            for layer in range(2)
        )
        return SelfModifyingState(MemoryState.start(weights, momentum=False), self.lr_bias.new_zeros(batch, 0, self.dim))

    def forward(self, x: Tensor, state: SelfModifyingState | None = None) -> tuple[Tensor, SelfModifyingState]:
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"SelfModifyingMemory expects x of shape (B, T, {self.dim}), got {tuple(x.shape)}")
        if state is None:
            state = self.initial_state(x.shape[0])
        y, memories, pending = chunk_aligned(self._scan, x, state.memories, state.pending_x, self.rule.chunk_size)
        return y, SelfModifyingState(memories, pending)

    def update_rule_parameters(self) -> list[nn.Parameter]:
        """What sets the inner learning rate η and retention α: M_η and M_α's initial weights and input projections,
        and the readouts w_η, b_η, w_α, b_α (a nested optimizer tunes these; the rest is the model)."""
        producers = [self.lr_readout, self.lr_bias, self.decay_readout, self.decay_bias]
        for name in ("lr", "decay"):
            producers += [*self.initial_weights[name], *self.input_proj[name].parameters()]
        return producers

    def current_memories(self, state: SelfModifyingState) -> MemoryState:
        """The five memories after every token seen so far, including the unfinished chunk's."""
        return self._scan(state.pending_x, state.memories)[1]

    def heads(self, x: Tensor) -> Tensor:
        """(B, T, dim) -> (B, H, T, head_dim), each head L2-normalised."""
        return F.normalize(x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2), dim=-1)

    def _scan(self, x: Tensor, memories: MemoryState) -> tuple[Tensor, MemoryState]:
        outputs = [x[:, :0]]
        for start in range(0, x.shape[1], self.rule.chunk_size):
            y, memories = self._chunk(x[:, start : start + self.rule.chunk_size], memories)
            outputs.append(y)
        return torch.cat(outputs, dim=1), memories

    def _chunk(self, x: Tensor, memories: MemoryState) -> tuple[Tensor, MemoryState]:
        """One chunk: the chunk-start memories generate k, v, η, α and the targets, then all five learn at once."""
        heads, generated = self.num_heads, len(GENERATED) * self.num_heads
        generators = [w[:, :generated] for w in memories.weights]

        def apply(inputs: Tensor) -> Tensor:
            """The four chunk-start generator memories on their (B, 4·H, T, d) inputs: M(u) = u + MLP(u)."""
            return inputs + mlp_forward(generators, inputs)[1][-1]

        # (B, H, T, d), unit norm per head: bounded inputs keep the self-referential targets M(v) from running away
        inputs = torch.cat([self.heads(self.input_proj[name](x)) for name in GENERATED], dim=1)
        k, v, lr_features, decay_features = apply(inputs).split(heads, dim=1)
        k = F.normalize(k, dim=-1)
        lr = self.max_lr * torch.sigmoid((lr_features * self.lr_readout[:, None]).sum(-1) + self.lr_bias[:, None])
        retain = torch.sigmoid((decay_features * self.decay_readout[:, None]).sum(-1) + self.decay_bias[:, None])
        # Targets v̂_□ = normalize(M_□(v)) for the generators, v itself for M_mem; residual memories M(k) = k + MLP(k)
        # fit target − k. The generators' reads (at k) are not used; reading them costs less than a separate scan.
        targets = torch.cat([F.normalize(apply(v.repeat(1, len(GENERATED), 1, 1)), dim=-1), v], dim=1)
        q = self.heads(self.q_proj(x))
        every = len(MEMORIES)
        gates = Gates(lr.repeat(1, every, 1), None, retain.repeat(1, every, 1))
        keys = k.repeat(1, every, 1, 1)
        y, memories = memory_scan(torch.cat([keys[:, :generated], q], dim=1), keys, targets - keys, gates, memories, self.rule)
        read = q + y[:, generated:]
        return self.out_proj(read.transpose(1, 2).flatten(2)), memories
