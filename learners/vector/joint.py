"""Joint training: every wake trains on all data seen so far (the upper bound, at a growing memory cost)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from somna.learners.vector.classifier import ClassifierConfig, ClassifierLearner
from somna.platform.registry import register_learner

COLUMNS = ("x", "y", "task")


@dataclass
class JointConfig(ClassifierConfig):
    name: str = "joint"


@register_learner("joint")
class JointLearner(ClassifierLearner):
    """Trains on the union of every experience seen so far (upper bound; stores all data)."""

    Config = JointConfig

    def __init__(self, config: Any, info: Any, seed: int):
        super().__init__(config, info, seed)
        features = int(torch.tensor(info.input_shape).prod())
        self.seen = {
            "x": torch.zeros(0, features),
            "y": torch.zeros(0, dtype=torch.long),
            "task": torch.zeros(0, dtype=torch.long),
        }

    def training_data(self, x: torch.Tensor, y: torch.Tensor, task: torch.Tensor) -> tuple[torch.Tensor, ...]:
        new = {"x": x, "y": y, "task": task}
        return tuple(torch.cat([self.seen[name], new[name]]) for name in COLUMNS)

    def after_wake(self, x: torch.Tensor, y: torch.Tensor, task: torch.Tensor) -> None:
        self.seen = dict(zip(COLUMNS, self.training_data(x, y, task)))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return super().state_dict() | {f"joint.{name}": column.clone() for name, column in self.seen.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        super().load_state_dict(state)
        self.seen = {name: state[f"joint.{name}"].clone() for name in COLUMNS}
