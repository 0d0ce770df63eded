"""Hope learner: a stack of Hope blocks (self-modifying Titans + CMS, Nested Learning eq. 94–97) on vector inputs.

Input as a sequence (our choice, see PAPERS.md "Hope"): each example's
feature vector is cut into `patch_size` consecutive features per token (a
digit's 8×8 image becomes its 8 pixel rows, read top to bottom), embedded
with a learned linear map plus a position embedding. Every Hope block reads
the sequence with its test-time memories — the self-modifying memory writes
every token (chunk `chunk_size`) and the CMS blocks update every `periods`
tokens — so each example is memorised at several frequencies while it is
read; the memories start from their meta-learned initial states for every
example. The mean of the last block's tokens goes through an MLP head
(`hidden`).

Wake trains the outer parameters (projections, gates, initial memory states,
head) by backpropagating through those inner updates, `epochs` passes per
experience, exactly like the classifier baselines (same optimizer names,
task masks, seeded batches). Sleep runs whatever stages
`learner.sleep.stages` lists; the learner hosts `nested-opt`
(learners/nested_opt.py): its update rule is the inner learning-rate and
decay producers of every self-modifying memory and the CMS blocks'
learning-rate gates, tuned through unrolled passes over the experience just
woken on (no older data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

import somna.kernels.catalog  # noqa: F401  (registers the hope kernel)
from somna.learners.shared.backbones import MLP
from somna.learners.vector.classifier import ClassifierConfig, ClassifierLearner, experience_tensors
from somna.platform.registry import KERNELS, register_learner


@dataclass
class HopeConfig(ClassifierConfig):
    name: str = "hope"
    hidden: list[int] = field(default_factory=lambda: [64])  # the classification head after the Hope stack
    dim: int = 32
    num_heads: int = 4
    depth: int = 1  # Hope blocks
    patch_size: int = 8  # features per token
    chunk_size: int = 4  # self-modifying memory's chunk
    periods: list[int] = field(default_factory=lambda: [1, 2, 4])  # CMS update periods, in tokens


class HopeClassifier(nn.Module):
    """Patch embedding -> Hope blocks (test-time memories) -> mean over tokens -> MLP head."""

    def __init__(self, in_features: int, num_classes: int, config: Any):
        super().__init__()
        if config.patch_size < 1 or in_features % config.patch_size:
            raise ValueError(
                f"learner.patch_size must be a positive divisor of the input size {in_features}, got {config.patch_size}"
            )
        if config.depth < 1:
            raise ValueError(f"learner.depth must be >= 1, got {config.depth}")
        self.patch_size = config.patch_size
        self.embed = nn.Linear(config.patch_size, config.dim)
        self.position = nn.Parameter(torch.randn(in_features // config.patch_size, config.dim) * 0.02)
        hope = KERNELS.get("hope")
        self.blocks = nn.ModuleList(
            hope(config.dim, config.num_heads, chunk_size=config.chunk_size, periods=list(config.periods))
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.dim)
        self.head = MLP(config.dim, list(config.hidden), num_classes)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.embed(x.reshape(len(x), -1, self.patch_size)) + self.position
        for block in self.blocks:
            tokens, _ = block(tokens)  # a fresh memory state per example sequence
        return self.head(self.norm(tokens.mean(dim=1)))


@register_learner("hope")
class HopeLearner(ClassifierLearner):
    """Hope block stack over feature patches: test-time memories at several frequencies, sleeps with any stages."""

    Config = HopeConfig

    def __init__(self, config: Any, info: Any, seed: int):
        super().__init__(config, info, seed)
        torch.manual_seed(seed)
        self.model = HopeClassifier(math.prod(info.input_shape), info.num_classes, config)

    # -- the nested-opt stage's contract ------------------------------------------------------
    def update_rule_parameters(self) -> list[nn.Parameter]:
        """Each Hope block's own update rule: its memories' inner learning-rate / decay producers and CMS lr gates."""
        return [parameter for block in self.model.blocks for parameter in block.update_rule_parameters()]

    def rehearsal(self, context: Any) -> list[tuple[Tensor, ...]]:
        x, y, task = experience_tensors(context.experience.train)
        order = torch.randperm(len(y), generator=self.generator(context.index, salt=3))
        return [(x[batch], y[batch], task[batch]) for batch in order.split(self.config.batch_size)]

    def unrolled_wake_loss(self, x: Tensor, y: Tensor, task: Tensor) -> Tensor:
        return self.cross_entropy(self.model(x), y, task)
