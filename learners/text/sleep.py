"""The sleep learner for language models, and its `expansion` stage.

Sleep (PAPERS.md, "Language Models Need Sleep"), order compute -> consolidate -> update:
  expansion          teacher := the model as woken (pending slow-block update not applied);
                     student := the model with that update applied, the sender block's
                     earlier low-rank experts reset (synaptic pruning) and one fresh expert
                     unlocked in the receiving block (function-preserving: its `up` is zero).
  knowledge-seeding  distill the teacher into the student (GKD) and reinforce imitation of
                     teacher samples (GRPO), training only the new expert (text/seeding.py);
                     without a preceding expansion it trains the receiving block instead.
  dreaming           (optional) ReST-EM rehearsal of self-generated data (text/dreaming.py).
The receiving block l* cycles through CMS blocks 1..L-1 (sleep k uses 1 + k mod (L-1)),
its sender is l*-1, so knowledge climbs the frequency ladder over sleeps; `receiver`
pins it. Ablations are config switches: -expansion drops "expansion" from
`sleep.stages`; -imitation sets knowledge-seeding alpha=1; -semantic reward gamma=0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from somna.learners.base import Metrics, SleepConfig
from somna.learners.stages import SleepStage
from somna.learners.text.learner import TextLearner, TextLearnerConfig, TextSleepContext
from somna.platform.registry import register_learner, register_sleep_stage


@dataclass
class TextSleepConfig(TextLearnerConfig):
    name: str = "sleep"
    sleep: SleepConfig = field(default_factory=lambda: SleepConfig(stages=["expansion", "knowledge-seeding"]))
    receiver: int = -1  # CMS block that receives each sleep's new expert; -1 cycles through 1..L-1


@register_learner("sleep")
class TextSleepLearner(TextLearner):
    """CMS mixture-of-experts LM that wakes online and sleeps by expansion + knowledge seeding."""

    Config = TextSleepConfig

    def __init__(self, config: Any, info: Any, seed: int):
        super().__init__(config, info, seed)
        blocks = len(config.model.cms_periods)
        if not -1 <= config.receiver < blocks:
            raise ValueError(f"learner.receiver must be -1 (cycle) or a CMS block in 0..{blocks - 1}, got {config.receiver}")
        self.sleeps = torch.zeros((), dtype=torch.long)

    def receiver_block(self) -> int:
        """The CMS block this sleep's new expert goes to."""
        if self.config.receiver >= 0:
            return self.config.receiver
        blocks = len(self.model.cms)
        return 1 + int(self.sleeps) % (blocks - 1) if blocks > 1 else 0

    def end_sleep(self, context: TextSleepContext) -> None:
        super().end_sleep(context)
        self.sleeps += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**super().state_dict(), "sleeps": self.sleeps.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        super().load_state_dict(state)
        self.sleeps = state["sleeps"].clone()


@register_sleep_stage("expansion", modality="text")
class CMSExpansion(SleepStage):
    """Freeze the teacher, apply the pending slow update, prune the sender's experts, unlock one in the receiver."""

    hooks = ("model", "frozen_copy", "apply_pending_updates", "receiver_block")

    def __call__(self, learner: TextSleepLearner, context: TextSleepContext) -> Metrics:
        context.teacher = learner.frozen_copy()
        learner.apply_pending_updates()
        receiver = learner.receiver_block()
        pruned = learner.model.reset_experts(receiver - 1) if receiver > 0 else 0
        expert = learner.model.unlock_expert(receiver)
        context.new_expert = None if expert is None else (receiver, expert)
        active = sum(len(block.unlocked()) for block in learner.model.cms)
        return {"block": float(receiver), "unlocked": float(expert is not None), "pruned": float(pruned), "active_experts": float(active)}
