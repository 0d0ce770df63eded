"""DER++ (Buzzega et al. 2020, "Dark Experience for General Continual Learning"), its training objective.

The reservoir also stores the network's logits z for each example, and each
step adds two terms on two independent buffer batches:
  alpha * ||f(x') - z'||^2   (dark knowledge: match the stored logits)
  beta  * CE(f(x''), y'')    (plain replay of the stored labels).
Choice (the paper stores logits while training): here the logits are those of
the model at the end of the example's experience, when the reservoir is
filled (see replay.py), i.e. the converged responses for that experience.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from somna.learners.vector.classifier import require_option
from somna.learners.vector.replay import ReplayConfig, ReplayLearner
from somna.platform.registry import register_learner


@dataclass
class DERConfig(ReplayConfig):
    name: str = "der"
    alpha: float = 0.3  # weight of the logit-matching term
    beta: float = 1.0  # weight of the label-replay term


@register_learner("der")
class DERLearner(ReplayLearner):
    """DER++: reservoir replay of labels and of the stored logits (logit matching)."""

    Config = DERConfig

    def __init__(self, config: Any, info: Any, seed: int):
        super().__init__(config, info, seed)
        for name in ("alpha", "beta"):
            require_option(name, getattr(config, name), getattr(config, name) >= 0, ">= 0")

    def buffer_columns(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        return super().buffer_columns() | {"logits": ((self.info.num_classes,), torch.float32)}

    def extra_loss(self, x: torch.Tensor, y: torch.Tensor, task: torch.Tensor, logits: torch.Tensor) -> torch.Tensor | None:
        if len(self.buffer) == 0:
            return None
        dark = self.buffer.sample(self.config.batch_size, self.sampler)
        labelled = self.buffer.sample(self.config.batch_size, self.sampler)
        logit_match = F.mse_loss(self.model(dark["x"]), dark["logits"])
        label_replay = self.cross_entropy(self.model(labelled["x"]), labelled["y"], labelled["task"])
        return self.config.alpha * logit_match + self.config.beta * label_replay

    def buffer_rows(self, x: torch.Tensor, y: torch.Tensor, task: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            logits = self.model(x)
        return super().buffer_rows(x, y, task) | {"logits": logits}
