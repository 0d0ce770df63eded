"""Fine-tuning: train on each experience in turn with nothing against forgetting (the lower bound)."""

from __future__ import annotations

from somna.learners.vector.classifier import ClassifierLearner
from somna.platform.registry import register_learner


@register_learner("finetune")
class FinetuneLearner(ClassifierLearner):
    """Plain sequential training on each experience (lower bound: forgets old classes)."""
