"""SEAL-style self-editing (`seal`): fine-tune, then dream (ReST-EM with LoRA-copy rewards); no expansion or seeding."""

from __future__ import annotations

from dataclasses import dataclass, field

from somna.learners.base import SleepConfig
from somna.learners.text.learner import TextLearner, TextLearnerConfig
from somna.platform.registry import register_learner


@dataclass
class SealConfig(TextLearnerConfig):
    name: str = "seal"
    sleep: SleepConfig = field(default_factory=lambda: SleepConfig(stages=["dreaming"]))


@register_learner("seal")
class SealLM(TextLearner):
    """SEAL-style: fine-tune, then dream self-edits rewarded through LoRA copies (ReST-EM); no expansion or seeding."""

    Config = SealConfig
