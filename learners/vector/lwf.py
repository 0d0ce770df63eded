"""Learning without Forgetting (Li & Hoiem 2017): knowledge distillation of the old model on the new data.

At the start of each wake the current model is frozen as the teacher. Every
step adds alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) on the
new batch, computed on the logits of the old classes only (the classes of the
experiences before this one): per old experience in task-IL (one head per
task, summed as in the paper), over all old classes together in class-IL and
domain-IL (one shared head). The teacher is rebuilt from the model at every
wake, so it is not part of the state: resuming after experience i is exact.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from somna.learners.vector.classifier import ClassifierConfig, ClassifierLearner, require_option
from somna.platform.registry import register_learner


@dataclass
class LwFConfig(ClassifierConfig):
    name: str = "lwf"
    alpha: float = 1.0  # weight of the distillation term (lambda_o in the paper)
    temperature: float = 2.0  # softmax temperature T of the distillation


def distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher || student) of temperature-softened distributions, averaged over the batch."""
    return F.kl_div(
        (student / temperature).log_softmax(dim=-1),
        (teacher / temperature).log_softmax(dim=-1),
        log_target=True,
        reduction="batchmean",
    ) * temperature**2


@register_learner("lwf")
class LwFLearner(ClassifierLearner):
    """Learning without Forgetting: distill the previous model's old-class logits on the new data."""

    Config = LwFConfig

    def __init__(self, config: Any, info: Any, seed: int):
        super().__init__(config, info, seed)
        require_option("alpha", config.alpha, config.alpha >= 0, ">= 0")
        require_option("temperature", config.temperature, config.temperature > 0, "> 0")
        self.teacher: nn.Module | None = None
        self.old_class_groups: list[list[int]] = []

    def before_wake(self, experience: Any) -> None:
        earlier = self.info.classes_per_experience[: self.experience_index]
        if self.info.scenario == "task":
            self.old_class_groups = [list(classes) for classes in earlier]
        else:
            self.old_class_groups = [sorted({c for classes in earlier for c in classes})] if earlier else []
        self.teacher = copy.deepcopy(self.model).requires_grad_(False) if self.old_class_groups else None

    def extra_loss(self, x: torch.Tensor, y: torch.Tensor, task: torch.Tensor, logits: torch.Tensor) -> torch.Tensor | None:
        if self.teacher is None:
            return None
        with torch.no_grad():
            targets = self.teacher(x)
        losses = [distillation(logits[:, g], targets[:, g], self.config.temperature) for g in self.old_class_groups]
        return self.config.alpha * torch.stack(losses).sum()

    def after_wake(self, x: torch.Tensor, y: torch.Tensor, task: torch.Tensor) -> None:
        self.teacher = None  # only needed while learning; the next wake freezes a fresh one
