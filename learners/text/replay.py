"""Text replay: fine-tuning plus a reservoir-sampled buffer of past *documents* mixed into every wake.

The buffer holds `buffer_size` raw documents (stored past data: it counts toward
the learner's memory budget).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from somna.learners.text.encoding import texts_from_bytes, texts_to_bytes
from somna.learners.text.learner import TextLearner, TextLearnerConfig
from somna.platform.registry import register_learner


@dataclass
class ReplayLMConfig(TextLearnerConfig):
    name: str = "replay"
    buffer_size: int = 32
    max_document_bytes: int = 512


@register_learner("replay")
class ReplayLM(TextLearner):
    """Fine-tuning that rehearses a reservoir buffer of past documents (raw text) in every wake."""

    Config = ReplayLMConfig

    def __init__(self, config: Any, info: Any, seed: int):
        super().__init__(config, info, seed)
        if config.buffer_size < 0:
            raise ValueError(f"learner.buffer_size must be >= 0, got {config.buffer_size}")
        self.buffer: list[str] = []
        self.seen = torch.zeros((), dtype=torch.long)

    def training_texts(self, experience: Any) -> list[str]:
        return super().training_texts(experience) + self.buffer

    def wake(self, experience: Any) -> dict[str, float]:
        metrics = super().wake(experience)
        generator = self.generator(experience.index, salt=1)
        for text in super().training_texts(experience):  # reservoir sampling: every document seen is kept with equal chance
            text = text.encode()[: self.config.max_document_bytes].decode(errors="ignore")
            self.seen += 1
            if len(self.buffer) < self.config.buffer_size:
                self.buffer.append(text)
            else:
                slot = int(torch.randint(int(self.seen), (1,), generator=generator))
                if slot < self.config.buffer_size:
                    self.buffer[slot] = text
        return {**metrics, "buffer_documents": float(len(self.buffer))}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The buffer travels as a (documents, max_document_bytes) uint8 tensor plus lengths."""
        data, lengths = texts_to_bytes(self.buffer, self.config.max_document_bytes)
        return {**super().state_dict(), "buffer.bytes": data, "buffer.lengths": lengths, "buffer.seen": self.seen.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        super().load_state_dict(state)
        self.buffer = texts_from_bytes(state["buffer.bytes"], state["buffer.lengths"])
        self.seen = state["buffer.seen"].clone()
