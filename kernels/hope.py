"""Hope block (Nested Learning eq. 94–97): short causal conv → self-modifying Titans memory → Continuum Memory System.

    c = depthwise causal conv_4(x),   h = x + SelfModifying(c),   y = CMS(h)
q and k are L2-normalised inside the self-modifying memory. Every part keeps
its own state (the conv keeps its last width − 1 inputs), so the block, like
each part, gives the same result for one call or consecutive pieces.

The conv starts as the identity (current tap 1, earlier taps 0) and has no
activation; the outer loop learns any mixing over time. Measured on MQAR
(docs/bench_recall.md, one seed, dev sequences, 4 pairs): the earlier front
end SiLU(conv) from a random init scrambled each token with its three
predecessors and zeroed its negative half before the memories keyed on it —
recall 0.24; identity init with SiLU 0.45; identity init without SiLU 1.00,
the same as no conv at all (1.00).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from somna.kernels.cms import CMSState, ContinuumMemory
from somna.kernels.self_modifying import SelfModifyingMemory, SelfModifyingState
from somna.platform.registry import register_kernel


class HopeState(NamedTuple):
    conv: Tensor  # (B, width − 1, dim): the last inputs, for the causal conv
    memory: SelfModifyingState
    cms: CMSState


@register_kernel("hope")
class HopeBlock(nn.Module):
    """Hope: self-modifying Titans memory followed by a CMS; options chunk_size, conv_width, periods, cms_variant, lr."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 4,
        *,
        chunk_size: int = 16,
        conv_width: int = 4,
        periods: Sequence[int] = (8, 32, 128),
        cms_variant: str = "sequential",
        lr: float = 1.0,
        max_lr: float = 0.5,
        detach_inner: bool = False,
    ):
        super().__init__()
        if isinstance(conv_width, bool) or not isinstance(conv_width, int) or conv_width < 1:
            raise ValueError(f"conv_width must be a positive int, got {conv_width!r}")
        self.dim = dim
        self.conv_weight = nn.Parameter(F.pad(torch.ones(dim, 1, 1), (conv_width - 1, 0)))  # identity: the last tap
        self.memory = SelfModifyingMemory(dim, num_heads, chunk_size=chunk_size, max_lr=max_lr, detach_inner=detach_inner)
        self.cms = ContinuumMemory(dim, num_heads, periods=periods, variant=cms_variant, lr=lr, detach_inner=detach_inner)

    def update_rule_parameters(self) -> list[nn.Parameter]:
        """The inner update rule: the self-modifying memory's η and α producers and the CMS learning-rate gates."""
        return self.memory.update_rule_parameters() + self.cms.update_rule_parameters()

    def initial_state(self, batch: int) -> HopeState:
        conv = self.conv_weight.new_zeros(batch, self.conv_weight.shape[-1] - 1, self.dim)
        return HopeState(conv, self.memory.initial_state(batch), self.cms.initial_state(batch))

    def forward(self, x: Tensor, state: HopeState | None = None) -> tuple[Tensor, HopeState]:
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"HopeBlock expects x of shape (B, T, {self.dim}), got {tuple(x.shape)}")
        if state is None:
            state = self.initial_state(x.shape[0])
        padded = torch.cat([state.conv, x], dim=1)
        c = F.conv1d(padded.transpose(1, 2), self.conv_weight, groups=self.dim).transpose(1, 2)
        read, memory = self.memory(c, state.memory)
        y, cms = self.cms(x + read, state.cms)
        return y, HopeState(padded[:, padded.shape[1] - state.conv.shape[1] :], memory, cms)
