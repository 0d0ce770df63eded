"""Learners: the Learner interface, continual-learning baselines and the sleep learners."""

from somna.learners.base import Learner, LearnerConfig, Metrics, SleepConfig, SleepContext, SleepStage

__all__ = ["Learner", "LearnerConfig", "Metrics", "SleepConfig", "SleepContext", "SleepStage"]
