"""Hypernetwork consolidation (von Oswald et al. 2020): a task embedding generates the target network's weights.

* `ChunkedHypernetwork`: h(e, c_i) -> chunk i of the flat weight vector; the
  learned chunk embeddings c_i let one small network emit many weights.
* Sleep stage `hypernet`: train h (and the new task's embedding e_T) on the
  experience just woken on, plus the output regulariser
  (β / (T−1)) Σ_{t<T} ‖h(e_t) − h*(e_t)‖², where h*(e_t) are the weights h
  generated for each earlier embedding *before this sleep* (PAPERS.md). Only
  those generated weights are kept, never past data. (The paper's optional
  look-ahead term Δθ is left out.)

Hosts: `hnet` on vector curricula (learners/vector/hnet.py: the hypernetwork
emits a whole MLP) and on text curricula (learners/text/hnet.py: it emits LoRA
adapters). Any learner can host the stage by providing its hooks:
  learner.hypernet            a ChunkedHypernetwork
  learner.task_embeddings     (num_tasks, embedding_dim) tensor; row i belongs to experience i
  learner.hypernet_data(context) -> tuple of equally long tensors (the experience's training data)
  learner.hypernet_loss(weights, task_index, *batch) -> scalar task loss of the generated weights
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from somna.learners.base import Metrics, SleepContext, seeded_generator
from somna.learners.stages import SleepStage
from somna.platform.registry import register_sleep_stage


class ChunkedHypernetwork(nn.Module):
    """h(e) = concat_i MLP([e, c_i])[:num_weights]: one MLP call per chunk, all chunks in one batch."""

    def __init__(self, num_weights: int, embedding_dim: int, chunk_size: int, chunk_dim: int, hidden: list[int]):
        super().__init__()
        if min(num_weights, embedding_dim, chunk_size, chunk_dim) < 1:
            raise ValueError("hypernetwork sizes (num_weights, embedding_dim, chunk_size, chunk_dim) must be >= 1")
        self.num_weights = num_weights
        self.chunk_embeddings = nn.Parameter(torch.randn(math.ceil(num_weights / chunk_size), chunk_dim))
        layers: list[nn.Module] = []
        width = embedding_dim + chunk_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, chunk_size))
        self.body = nn.Sequential(*layers)

    def forward(self, task_embedding: Tensor) -> Tensor:
        """Flat weights (..., num_weights) for task embeddings (..., embedding_dim): one or a batch of tasks."""
        chunks, chunk_dim = self.chunk_embeddings.shape
        batch_shape = task_embedding.shape[:-1]
        inputs = torch.cat(
            [
                task_embedding.unsqueeze(-2).expand(*batch_shape, chunks, -1),
                self.chunk_embeddings.expand(*batch_shape, chunks, chunk_dim),
            ],
            dim=-1,
        )
        return self.body(inputs).flatten(-2)[..., : self.num_weights]


@dataclass
class HypernetOptions:
    epochs: int = 20
    lr: float = 1e-3
    beta: float = 0.05  # weight of the output regulariser
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.beta < 0:
            raise ValueError(
                f"hypernet options need epochs >= 1, batch_size >= 1, lr > 0, beta >= 0; "
                f"got epochs={self.epochs}, batch_size={self.batch_size}, lr={self.lr}, beta={self.beta}"
            )


@register_sleep_stage("hypernet")
class HypernetStage(SleepStage):
    """Consolidate the new experience into the hypernetwork, keeping earlier embeddings' weights fixed."""

    Options = HypernetOptions
    hooks = ("hypernet", "task_embeddings", "hypernet_data", "hypernet_loss")

    def __call__(self, learner: Any, context: SleepContext) -> Metrics:
        options = self.options
        hypernet: ChunkedHypernetwork = learner.hypernet
        task = context.index
        old_embeddings = learner.task_embeddings[:task].detach()
        with torch.no_grad():  # h*(e_t): the weights generated for earlier tasks before this sleep
            anchors = hypernet(old_embeddings) if task else None
        embedding = nn.Parameter(learner.task_embeddings[task].detach().clone())
        optimizer = torch.optim.Adam([*hypernet.parameters(), embedding], lr=options.lr)
        data = learner.hypernet_data(context)
        generator = seeded_generator(context.seed, task, salt=7)
        task_total = reg_total = 0.0
        steps = 0
        hypernet.train()
        for _ in range(options.epochs):
            for batch in torch.randperm(len(data[0]), generator=generator).split(options.batch_size):
                task_loss = learner.hypernet_loss(hypernet(embedding), task, *(column[batch] for column in data))
                loss = task_loss
                if anchors is not None:
                    regulariser = self.output_regulariser(hypernet, old_embeddings, anchors)
                    loss = loss + options.beta * regulariser
                    reg_total += regulariser.item()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                task_total, steps = task_total + task_loss.item(), steps + 1
        hypernet.eval()
        with torch.no_grad():
            learner.task_embeddings[task] = embedding.detach()
            drift = self.output_regulariser(hypernet, old_embeddings, anchors) if anchors is not None else 0.0
        return {"task_loss": task_total / steps, "regulariser": reg_total / steps, "old_weight_drift": float(drift)}

    @staticmethod
    def output_regulariser(hypernet: ChunkedHypernetwork, embeddings: Tensor, anchors: Tensor) -> Tensor:
        """(1/(T−1)) Σ_{t<T} ‖h(e_t) − h*(e_t)‖² (von Oswald et al. 2020, eq. 2 without look-ahead)."""
        return (hypernet(embeddings) - anchors).pow(2).sum(dim=1).mean()
