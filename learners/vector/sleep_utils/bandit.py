"""An EXP3 bandit that chooses what to dream: which classes the next rehearsal batch is made of.

Exp3 (Auer et al. 2002) suits a non-stationary reward: the reward of an arm is
how much the student still disagrees with its teacher on that arm's dreams (or
how much a step on them lowered the loss), which falls as consolidation
succeeds, so the curriculum moves on by itself. Policy over the allowed arms:
p = (1 - gamma) softmax(w) + gamma / K; after observing rewards r_a in [0, 1]
for the arms drawn, w_a += gamma * (r_a / p_a) / K (importance-weighted).
Its only state is the weight vector, a float64 tensor owned by the learner, so it checkpoints exactly.
"""

from __future__ import annotations

import torch


class Exp3Curriculum:
    """EXP3 over the arms of `weights` (updated in place, so the owner checkpoints it); `allowed` masks arms."""

    def __init__(self, weights: torch.Tensor, exploration: float = 0.2):
        if not 0.0 < exploration <= 1.0:
            raise ValueError(f"dreaming exploration must be in (0, 1], got {exploration}")
        self.exploration = exploration
        self.weights = weights

    def policy(self, allowed: torch.Tensor) -> torch.Tensor:
        """Arm probabilities (zero outside `allowed`)."""
        if not bool(allowed.any()):
            raise ValueError("the dreaming curriculum has no arm to choose from")
        logits = self.weights.masked_fill(~allowed, float("-inf"))
        uniform = allowed.double() / allowed.sum()
        return (1.0 - self.exploration) * torch.softmax(logits, dim=0) + self.exploration * uniform

    def draw(self, allowed: torch.Tensor, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """`count` arms drawn with replacement, and the policy they were drawn from."""
        probabilities = self.policy(allowed)
        return torch.multinomial(probabilities, count, replacement=True, generator=generator), probabilities

    def update(self, arms: torch.Tensor, rewards: torch.Tensor, probabilities: torch.Tensor) -> None:
        """EXP3 step for every distinct arm drawn; its reward is the mean over its draws, clipped to [0, 1]."""
        num_allowed = int((probabilities > 0).sum())
        for arm in arms.unique().tolist():
            reward = float(rewards[arms == arm].double().mean().clamp(0.0, 1.0))
            self.weights[arm] += self.exploration * reward / float(probabilities[arm]) / num_allowed

    def entropy(self, allowed: torch.Tensor) -> float:
        p = self.policy(allowed)
        p = p[p > 0]
        return float(-(p * p.log()).sum())
