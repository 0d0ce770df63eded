"""`hnet` on vector curricula: a task-conditioned hypernetwork emits every weight of an MLP (von Oswald et al. 2020).

The target network is a plain MLP whose every weight comes from the hypernetwork
h (learners/hypernet.py). Wake learns only the new task's embedding with h
frozen (fast, and it cannot disturb earlier tasks' weights); the `hypernet`
sleep stage then consolidates. Task-incremental prediction uses the given
task's embedding; class-incremental prediction infers the task per example as
the embedding whose generated network is most confident (minimum predictive
entropy over that task's classes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from somna.learners.base import Learner, LearnerConfig, Metrics, SleepConfig, SleepContext
from somna.learners.hypernet import ChunkedHypernetwork
from somna.learners.vector.classifier import experience_tensors
from somna.platform.registry import register_learner


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


@register_learner("hnet")
class HnetLearner(Learner):
    """Task-conditioned hypernetwork: wake learns a task embedding, sleep (`hypernet`) consolidates into h."""

    Config = HnetConfig
    hypernet: ChunkedHypernetwork  # the `hypernet` stage's hooks (learners/hypernet.py)
    task_embeddings: Tensor

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
        generator = self.generator(task)
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
