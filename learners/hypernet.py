"""Hypernetwork consolidation (von Oswald et al. 2020): a task embedding generates the target network's weights.

* `ChunkedHypernetwork`: h(e, c_i) -> chunk i of the flat weight vector; the
  learned chunk embeddings c_i let one small network emit many weights.
* Sleep stage `hypernet`: train h (and the new task's embedding e_T) on the
  experience just woken on, plus the output regulariser
  (β / (T−1)) Σ_{t<T} ‖h(e_t) − h*(e_t)‖², where h*(e_t) are the weights h
  generated for each earlier embedding *before this sleep* (PAPERS.md). Only
  those generated weights are kept, never past data. (The paper's optional
  look-ahead term Δθ is left out.)
* Learner `hnet` (vector curricula): the target network is a plain MLP whose
  every weight comes from h. Wake learns only the new task's embedding with h
  frozen (fast, and it cannot disturb earlier tasks' weights); the
  `hypernet` sleep stage then consolidates. Task-incremental prediction uses
  the given task's embedding; class-incremental prediction infers the task
  per example as the embedding whose generated network is most confident
  (minimum predictive entropy over that task's classes).

Stage contract (any learner can host the stage by providing these):
  learner.hypernet            a ChunkedHypernetwork
  learner.task_embeddings     (num_tasks, embedding_dim) tensor; row i belongs to experience i
  learner.hypernet_data(context) -> tuple of equally long tensors (the experience's training data)
  learner.hypernet_loss(weights, task_index, *batch) -> scalar task loss of the generated weights
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from somna.learners.base import Learner, LearnerConfig, Metrics, SleepConfig, SleepContext
from somna.learners.classifier import experience_tensors
from somna.platform.registry import register_learner, register_sleep_stage


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


@register_sleep_stage("hypernet")
class HypernetStage:
    """Consolidate the new experience into the hypernetwork, keeping earlier embeddings' weights fixed."""

    def __init__(self, epochs: int = 20, lr: float = 1e-3, beta: float = 0.05, batch_size: int = 32):
        if epochs < 1 or batch_size < 1 or lr <= 0 or beta < 0:
            raise ValueError(
                f"hypernet options need epochs >= 1, batch_size >= 1, lr > 0, beta >= 0; "
                f"got epochs={epochs}, batch_size={batch_size}, lr={lr}, beta={beta}"
            )
        self.epochs, self.lr, self.beta, self.batch_size = epochs, lr, beta, batch_size

    def __call__(self, learner: Learner, context: SleepContext) -> Metrics:
        for attribute in ("hypernet", "task_embeddings", "hypernet_data", "hypernet_loss"):
            if not hasattr(learner, attribute):
                raise TypeError(f"sleep stage 'hypernet' needs learner.{attribute}; {type(learner).__name__} lacks it")
        hypernet: ChunkedHypernetwork = learner.hypernet
        task = context.index
        old_embeddings = learner.task_embeddings[:task].detach()
        with torch.no_grad():  # h*(e_t): the weights generated for earlier tasks before this sleep
            anchors = hypernet(old_embeddings) if task else None
        embedding = nn.Parameter(learner.task_embeddings[task].detach().clone())
        optimizer = torch.optim.Adam([*hypernet.parameters(), embedding], lr=self.lr)
        data = learner.hypernet_data(context)
        generator = torch.Generator().manual_seed(context.seed * 1_000_003 + task * 101 + 7)
        task_total = reg_total = 0.0
        steps = 0
        hypernet.train()
        for _ in range(self.epochs):
            for batch in torch.randperm(len(data[0]), generator=generator).split(self.batch_size):
                task_loss = learner.hypernet_loss(hypernet(embedding), task, *(column[batch] for column in data))
                loss = task_loss
                if anchors is not None:
                    regulariser = self.output_regulariser(hypernet, old_embeddings, anchors)
                    loss = loss + self.beta * regulariser
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


def layer_shapes(sizes: list[int]) -> list[tuple[int, ...]]:
    """Weight and bias shapes of an MLP with layer widths `sizes` (input first, output last)."""
    if any(size < 1 for size in sizes):
        raise ValueError(f"learner.hidden sizes must be >= 1, got {sizes[1:-1]}")
    shapes: list[tuple[int, ...]] = []
    for fan_in, fan_out in zip(sizes, sizes[1:]):
        shapes += [(fan_out, fan_in), (fan_out,)]
    return shapes


def generated_mlp(x: Tensor, weights: Tensor, shapes: list[tuple[int, ...]]) -> Tensor:
    """Run the target MLP (ReLU between layers) with its parameters unpacked from a flat vector."""
    params = torch.split(weights, [math.prod(s) for s in shapes])
    layers = len(shapes) // 2
    for layer in range(layers):
        x = F.linear(x, params[2 * layer].view(shapes[2 * layer]), params[2 * layer + 1])
        if layer < layers - 1:
            x = F.relu(x)
    return x


@dataclass
class HnetConfig(LearnerConfig):
    name: str = "hnet"
    hidden: list[int] = field(default_factory=lambda: [64, 64])  # target network
    hnet_hidden: list[int] = field(default_factory=lambda: [64, 64])
    embedding_dim: int = 32
    chunk_size: int = 1500
    chunk_dim: int = 32
    wake_epochs: int = 2  # epochs of embedding-only learning in wake
    lr: float = 1e-3
    batch_size: int = 32
    sleep: SleepConfig = field(default_factory=lambda: SleepConfig(stages=["hypernet"]))


@register_learner("hnet", modality="vector")
class HnetLearner(Learner):
    """Task-conditioned hypernetwork: wake learns a task embedding, sleep (`hypernet`) consolidates into h."""

    Config = HnetConfig

    def __init__(self, config: Any, info: Any, seed: int):
        super().__init__(config, info, seed)
        if config.wake_epochs < 0 or config.batch_size < 1:
            raise ValueError(
                f"learner.wake_epochs must be >= 0 and learner.batch_size >= 1, got {config.wake_epochs}, {config.batch_size}"
            )
        torch.manual_seed(seed)
        self.shapes = layer_shapes([math.prod(info.input_shape), *config.hidden, info.num_classes])
        num_weights = sum(math.prod(s) for s in self.shapes)
        self.hypernet = ChunkedHypernetwork(
            num_weights, config.embedding_dim, config.chunk_size, config.chunk_dim, list(config.hnet_hidden)
        )
        self.task_embeddings = torch.randn(info.num_experiences, config.embedding_dim)
        self.task_classes = torch.zeros(info.num_experiences, info.num_classes, dtype=torch.bool)
        self.learned_tasks = 0
        self.hypernet.eval()

    # -- wake: learn the new task's embedding only --------------------------------------
    def wake(self, experience: Any) -> Metrics:
        x, y, _ = experience_tensors(experience.train)
        task = experience.index
        self.task_classes[task, y.unique()] = True
        embedding = nn.Parameter(self.task_embeddings[task].clone())
        optimizer = torch.optim.Adam([embedding], lr=self.config.lr * 10)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + task * 101)
        total, steps = 0.0, 0
        for _ in range(self.config.wake_epochs):
            for batch in torch.randperm(len(y), generator=generator).split(self.config.batch_size):
                loss = self.hypernet_loss(self.hypernet(embedding), task, x[batch], y[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total, steps = total + loss.item(), steps + 1
        self.hypernet.zero_grad(set_to_none=True)
        self.task_embeddings[task] = embedding.detach()
        self.learned_tasks = max(self.learned_tasks, task + 1)
        return {"loss": total / max(steps, 1), "train_examples": float(len(y))}

    # -- the hypernet stage's contract ----------------------------------------------------
    def hypernet_data(self, context: SleepContext) -> tuple[Tensor, Tensor]:
        x, y, _ = experience_tensors(context.experience.train)
        return x, y

    def hypernet_loss(self, weights: Tensor, task: int, x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(self.task_logits(x, weights, task), y)

    # -- prediction ------------------------------------------------------------------------
    def task_logits(self, x: Tensor, weights: Tensor, task: int) -> Tensor:
        """Logits of the generated network, restricted to the classes of `task` (a head per task)."""
        logits = generated_mlp(x, weights, self.shapes)
        mask = self.task_classes[task]
        return logits.masked_fill(~mask, float("-inf")) if mask.any() else logits

    def predict(self, batch: dict[str, Tensor], task_id: int | None = None) -> Tensor:
        x = batch["x"].float()
        with torch.no_grad():
            if task_id is not None:
                mask = torch.zeros_like(self.task_classes[0])
                mask[list(self.info.classes_per_experience[task_id])] = True
                logits = generated_mlp(x, self.hypernet(self.task_embeddings[task_id]), self.shapes)
                return logits.masked_fill(~mask, float("-inf")).argmax(dim=-1)
            return self.infer_task_and_predict(x)

    def infer_task_and_predict(self, x: Tensor) -> Tensor:
        """Class-IL: per example, the learned task whose network has minimum predictive entropy decides."""
        tasks = range(max(self.learned_tasks, 1))
        weights = self.hypernet(self.task_embeddings[: len(tasks)])
        logits = torch.stack([self.task_logits(x, weights[t], t) for t in tasks])
        log_probs = logits.log_softmax(dim=-1)
        entropy = -(log_probs.exp() * log_probs.nan_to_num(neginf=0.0)).sum(dim=-1)  # (tasks, batch)
        chosen = entropy.argmin(dim=0)
        return logits[chosen, torch.arange(len(x))].argmax(dim=-1)

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Tensor]:
        return {f"hypernet.{k}": v.detach().clone() for k, v in self.hypernet.state_dict().items()} | {
            "task_embeddings": self.task_embeddings.clone(),
            "task_classes": self.task_classes.clone(),
            "learned_tasks": torch.tensor(self.learned_tasks),
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.hypernet.load_state_dict({k.removeprefix("hypernet."): v for k, v in state.items() if k.startswith("hypernet.")})
        self.task_embeddings = state["task_embeddings"].clone()
        self.task_classes = state["task_classes"].clone()
        self.learned_tasks = int(state["learned_tasks"])
