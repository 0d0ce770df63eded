"""Small from-scratch networks that train on CPU in seconds."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """Fully connected ReLU network; `features` exposes the penultimate layer for learners that need it."""

    def __init__(self, in_features: int, hidden: list[int], out_features: int):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            if size < 1:
                raise ValueError(f"hidden layer sizes must be >= 1, got {hidden}")
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, out_features)
        self.feature_dim = width

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))
