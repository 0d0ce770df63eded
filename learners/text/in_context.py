"""In-context: each probe is asked with its passage in the prompt (the ceiling for knowledge that only has to be read).

Wake trains the QA lines in that same reading format (passage + question + answer).
"""

from __future__ import annotations

from typing import Any

from somna.learners.text.learner import TextLearner
from somna.platform.registry import register_learner


@register_learner("in-context")
class InContextLM(TextLearner):
    """Fine-tuning in the reading format, evaluated with each probe's passage in the prompt (the ceiling)."""

    def training_texts(self, experience: Any) -> list[str]:
        held_out = self.held_out_rows(experience)
        return [
            f"{row['context']} {row['text']}" if row["prompt"] and row["context"] else row["text"]
            for row in experience.train
            if row not in held_out
        ]

    def probe_prompt(self, row: dict[str, str]) -> str:
        return f"{row['context']} {row['prompt']}" if row.get("context") else row["prompt"]
