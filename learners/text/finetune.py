"""Text fine-tuning: next-token SFT on each experience's documents, nothing else (the lower bound).

Registered twice: `finetune`, and `finetune-no-dream`, the name the dreaming
table gives the same learner (the row "fine-tune without dreams").
"""

from __future__ import annotations

from somna.learners.text.learner import TextLearner
from somna.platform.registry import register_learner


@register_learner("finetune-no-dream", description="The dreaming table's fine-tuning row: next-token SFT on each experience, no sleep.")
@register_learner("finetune")
class FinetuneLM(TextLearner):
    """Next-token fine-tuning on each experience's documents (no sleep, no memory of the past)."""
