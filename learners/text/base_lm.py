"""The pretrained base, unchanged (`base`): the floor every text learner must rise above.

Wake writes nothing anywhere and there is no sleep, so its closed-book accuracy on a fact stream
is what the base knows about people it never read about (≈ 0 on a leak-free stream), and its
skill retention is 1 by construction.
"""

from __future__ import annotations

from typing import Any

from somna.learners.base import Metrics
from somna.learners.text.learner import TextLearner
from somna.platform.registry import register_learner


@register_learner("base")
class BaseLM(TextLearner):
    """The base LM, never trained: each probe asked closed-book."""

    def wake(self, experience: Any) -> Metrics:
        return {"train_documents": 0.0}
