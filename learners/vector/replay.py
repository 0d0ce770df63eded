"""Experience replay: every training batch is joined by a batch drawn from a reservoir of past examples.

The reservoir (learners/shared/buffers.py) is filled after each wake with that
experience's training examples, each offered once, so it stays a uniform
sample of everything seen. Each step adds the cross-entropy of `batch_size`
stored examples to the batch's own loss (ER as in Chaudhry et al. 2019).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from somna.learners.shared.buffers import ReservoirBuffer
from somna.learners.vector.classifier import ClassifierConfig, ClassifierLearner, require_option
from somna.platform.registry import register_learner

SAMPLE_SALT = 1  # generator salt for drawing replay batches
INSERT_SALT = 2  # generator salt for the reservoir's slot draws


@dataclass
class ReplayConfig(ClassifierConfig):
    name: str = "replay"
    buffer: int = 200  # examples kept (the memory budget)


@register_learner("replay")
class ReplayLearner(ClassifierLearner):
    """Reservoir experience replay with a fixed buffer of past examples."""

    Config = ReplayConfig

    def __init__(self, config: Any, info: Any, seed: int):
        super().__init__(config, info, seed)
        require_option("buffer", config.buffer, config.buffer >= 0, ">= 0")
        self.buffer = ReservoirBuffer(config.buffer, self.buffer_columns())
        self.sampler: torch.Generator | None = None

    def buffer_columns(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        features = int(torch.tensor(self.info.input_shape).prod())
        return {"x": ((features,), torch.float32), "y": ((), torch.long), "task": ((), torch.long)}

    def before_wake(self, experience: Any) -> None:
        self.sampler = self.generator(self.experience_index, SAMPLE_SALT)

    def extra_loss(self, x: torch.Tensor, y: torch.Tensor, task: torch.Tensor, logits: torch.Tensor) -> torch.Tensor | None:
        if len(self.buffer) == 0:
            return None
        past = self.buffer.sample(self.config.batch_size, self.sampler)
        return self.cross_entropy(self.model(past["x"]), past["y"], past["task"])

    def after_wake(self, x: torch.Tensor, y: torch.Tensor, task: torch.Tensor) -> None:
        self.buffer.add(self.generator(self.experience_index, INSERT_SALT), **self.buffer_rows(x, y, task))

    def buffer_rows(self, x: torch.Tensor, y: torch.Tensor, task: torch.Tensor) -> dict[str, torch.Tensor]:
        """The columns stored for an experience's examples; DER++ adds the model's logits."""
        return {"x": x, "y": y, "task": task}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return super().state_dict() | self.buffer.state_dict("buffer.")

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        super().load_state_dict(state)
        self.buffer.load_state_dict(state, "buffer.")
