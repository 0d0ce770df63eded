"""Self-modification in sleep: meta-learn the wake phase's own update rule (Nested Learning, "nested optimizers").

During wake a test-time memory (Titans `NeuralMemory` from somna.kernels)
memorises the stream with its inner rule
    S_t = η_t S_{t−1} − θ_t ∇ℓ(M; k_t, v_t),   M_t = (1 − α_t) M_{t−1} + S_t,
whose learning rate θ_t, momentum η_t and forget gate α_t are projections of
the input. The `nested-opt` sleep stage is the outer level: it unrolls a wake
pass on rehearsal sequences (the learner's buffer), scores how well the memory
recalls what it just wrote, and takes gradient steps on the gate projections
only, differentiating through the inner updates. The next wake then
memorises with the improved rule.

Stage contract (a learner hosts the stage by providing):
  learner.update_rule_parameters() -> list of parameters (the wake rule's gates)
  learner.rehearsal(context)       -> list of batches (tuples of tensors) to unroll wake on
  learner.unrolled_wake_loss(*batch) -> scalar loss of one differentiable wake pass

`RecallMemory` is such a host for associative recall (MQAR-style token
sequences k_1 v_1 … k_P v_P q_1 … q_Q): tokens are fixed random unit vectors,
the input at t is [e(x_t), e(x_{t−1})] (a value token sees its key), and the
memory's projections are fixed selections (key = previous token, value and
query = current token), so recall depends only on the update rule — what the
stage learns. The memory starts every sequence empty (initial weights zero,
not meta-learned). It keeps the last `buffer_size` sequences it woke on as its
rehearsal buffer (counted as its memory budget).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from somna.kernels.neural_memory import NeuralMemory
from somna.learners.base import Metrics, SleepContext
from somna.learners.stages import SleepStage
from somna.platform.registry import register_sleep_stage

IGNORE_INDEX = -100  # targets at positions that ask nothing (as in PyTorch's cross-entropy)


@dataclass
class NestedOptOptions:
    steps: int = 30  # outer gradient steps per sleep
    lr: float = 0.05

    def __post_init__(self) -> None:
        if self.steps < 1 or self.lr <= 0:
            raise ValueError(f"nested-opt options need steps >= 1 and lr > 0; got steps={self.steps}, lr={self.lr}")


@register_sleep_stage("nested-opt")
class NestedOptStage(SleepStage):
    """Gradient steps on the wake rule's gates through unrolled wake passes on rehearsal data."""

    Options = NestedOptOptions
    hooks = ("update_rule_parameters", "rehearsal", "unrolled_wake_loss")

    def __call__(self, learner: Any, context: SleepContext) -> Metrics:
        parameters = list(learner.update_rule_parameters())
        batches = learner.rehearsal(context)
        if not batches:
            return {"steps": 0.0}
        optimizer = torch.optim.Adam(parameters, lr=self.options.lr)
        losses = []
        for step in range(self.options.steps):
            loss = learner.unrolled_wake_loss(*batches[step % len(batches)])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        for parameter in parameters:
            parameter.grad = None
        return {"steps": float(self.options.steps), "loss_first": losses[0], "loss_last": losses[-1]}


class RecallMemory(nn.Module):
    """A test-time associative memory over token sequences whose update rule the `nested-opt` stage tunes."""

    def __init__(
        self,
        vocab_size: int = 128,
        embed_dim: int = 64,
        *,
        chunk_size: int = 4,
        max_lr: float = 0.5,
        buffer_size: int = 64,
        temperature: float = 0.1,
        seed: int = 0,
    ):
        super().__init__()
        if buffer_size < 1 or temperature <= 0:
            raise ValueError(f"buffer_size must be >= 1 and temperature > 0, got {buffer_size}, {temperature}")
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("codebook", F.normalize(torch.randn(vocab_size, embed_dim, generator=generator), dim=-1))
        torch.manual_seed(seed)
        self.memory = NeuralMemory(
            2 * embed_dim, num_heads=1, head_dim=embed_dim, depth=1, chunk_size=chunk_size, max_lr=max_lr
        )
        eye, zero = torch.eye(embed_dim), torch.zeros(embed_dim, embed_dim)
        with torch.no_grad():
            self.memory.q_proj.weight.copy_(torch.cat([eye, zero], dim=1))  # query: the current token
            self.memory.k_proj.weight.copy_(torch.cat([zero, eye], dim=1))  # key: the previous token
            self.memory.v_proj.weight.copy_(torch.cat([eye, zero], dim=1))  # value: the current token
            self.memory.out_proj.weight.copy_(torch.cat([eye, zero], dim=0))
            self.memory.initial_weights[0].zero_()  # every sequence starts with an empty memory
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        for parameter in self.update_rule_parameters():
            parameter.requires_grad_(True)
        self.temperature = temperature
        self.buffer_size = buffer_size
        self.buffer_inputs: Tensor = torch.zeros(0, 0, dtype=torch.long)
        self.buffer_targets: Tensor = torch.zeros(0, 0, dtype=torch.long)

    def update_rule_parameters(self) -> list[nn.Parameter]:
        """θ (learning rate), η (momentum) and α (forget) gate projections of the wake memory."""
        gates = (self.memory.lr_proj, self.memory.momentum_proj, self.memory.forget_proj)
        return [p for gate in gates if gate is not None for p in gate.parameters()]

    def recall_logits(self, inputs: Tensor) -> Tensor:
        """One wake pass from an empty memory: (B, T) tokens -> (B, T, vocab) scores of what it reads back."""
        current = self.codebook[inputs]
        previous = F.pad(current, (0, 0, 1, 0))[:, :-1]
        read, _ = self.memory(torch.cat([current, previous], dim=-1))
        return F.normalize(read[..., : self.codebook.shape[1]], dim=-1) @ self.codebook.T / self.temperature

    def unrolled_wake_loss(self, inputs: Tensor, targets: Tensor) -> Tensor:
        logits = self.recall_logits(inputs)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)

    @torch.no_grad()
    def recall(self, inputs: Tensor, targets: Tensor) -> float:
        """Fraction of queried values read back correctly (argmax over the codebook)."""
        mask = targets != IGNORE_INDEX
        return float((self.recall_logits(inputs).argmax(-1)[mask] == targets[mask]).float().mean())

    def wake(self, inputs: Tensor, targets: Tensor) -> Metrics:
        """Memorise a batch of sequences (each from an empty memory); keep them as rehearsal data."""
        accuracy = self.recall(inputs, targets)
        if self.buffer_inputs.numel():
            inputs, targets = torch.cat([self.buffer_inputs, inputs]), torch.cat([self.buffer_targets, targets])
        self.buffer_inputs, self.buffer_targets = inputs[-self.buffer_size :], targets[-self.buffer_size :]
        return {"recall": accuracy}

    def rehearsal(self, context: SleepContext, batch_size: int = 16) -> list[tuple[Tensor, Tensor]]:
        if not self.buffer_inputs.numel():
            return []
        return list(zip(self.buffer_inputs.split(batch_size), self.buffer_targets.split(batch_size)))
