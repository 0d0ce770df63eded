"""On-policy self-distillation (`opsd`): the sleep learner with knowledge seeding only.

No expansion (the receiving block itself is trained) and no imitation: lambda = 1
(every distillation sequence is the student's own sample) and alpha = 1. Its fast memory
is CMS level 0 (`fast_memory=cms`): on-policy distillation needs a teacher whose knowledge
is in its weights, so that its distributions on the student's own samples are what it knows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from somna.learners.base import SleepConfig
from somna.learners.text.fast_memory import FastMemoryChoice
from somna.learners.text.sleep import TextSleepLearner, TextSleepConfig
from somna.platform.registry import register_learner


@dataclass
class OPSDConfig(TextSleepConfig):
    name: str = "opsd"
    fast_memory: FastMemoryChoice = FastMemoryChoice.cms
    sleep: SleepConfig = field(
        default_factory=lambda: SleepConfig(stages=["knowledge-seeding"], options={"knowledge-seeding": {"lmbda": 1.0, "alpha": 1.0}})
    )


@register_learner("opsd")
class OPSDLearner(TextSleepLearner):
    """On-policy self-distillation only: no expansion, no imitation (lambda = 1, alpha = 1)."""

    Config = OPSDConfig
