"""In-context: each probe is asked with its passage in the prompt (the ceiling for knowledge that only has to be read).

Wake fine-tunes on the experience's documents like `finetune`; what differs is the test: the
probe's passage (its `context` column) comes first, "{passage} Q: ... A:", the reading format
the base was pretrained on. With a base that reads, this is the accuracy knowledge would have
if it were never forgotten.
"""

from __future__ import annotations

from somna.learners.text.learner import TextLearner
from somna.platform.registry import register_learner


@register_learner("in-context")
class InContextLM(TextLearner):
    """Fine-tuning, evaluated with each probe's passage in the prompt (the ceiling)."""

    def probe_prompt(self, row: dict[str, str]) -> str:
        return f"{row['context']} {row['prompt']}" if row.get("context") else row["prompt"]
