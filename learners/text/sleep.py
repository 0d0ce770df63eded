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
The receiving level l* cycles through CMS levels 1..L-1 (sleep k uses 1 + k mod (L-1)),
its sender is l*-1, so knowledge climbs the frequency ladder over sleeps; `receiver`
pins it. Every sleep of the stream must find a locked expert in its receiving level:
the learner checks that when it is built (a config error names the key to raise),
so expansion never runs out and seeding never falls back to training a whole level.
Ablations are config switches: -expansion drops "expansion" from `sleep.stages`
(seeding then trains the receiving level itself); -imitation sets knowledge-seeding
alpha=1; -semantic reward gamma=0.
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
    receiver: int = -1  # CMS level that receives each sleep's new expert; -1 cycles through 1..L-1


def receiver_level(receiver: int, levels: int, sleep: int) -> int:
    """The CMS level that sleep number `sleep` gives its new expert to (`receiver` -1: cycle through 1..L-1)."""
    if receiver >= 0:
        return receiver
    return 1 + sleep % (levels - 1) if levels > 1 else 0


def expert_demand(receiver: int, levels: int, sleeps: int) -> list[int]:
    """Experts unlocked in each sleep's receiving level once it unlocked its new one.

    Expansion unlocks one expert per sleep and prunes the sender's (the level below), so a level
    holds the experts unlocked since its sender last sent."""
    unlocked = [0] * levels
    demand = []
    for sleep in range(sleeps):
        level = receiver_level(receiver, levels, sleep)
        if level > 0:
            unlocked[level - 1] = 0
        unlocked[level] += 1
        demand.append(unlocked[level])
    return demand


def check_expert_supply(config: Any, sleeps: int) -> None:
    """A ValueError unless each of the stream's `sleeps` expansions finds a locked expert in its receiving level."""
    levels, available = len(config.model.cms_periods), config.model.num_experts
    demand = expert_demand(config.receiver, levels, sleeps)
    short = [sleep for sleep, needed in enumerate(demand) if needed > available]
    if short:
        raise ValueError(
            f"learner.model.num_experts={available} runs out: sleep {short[0] + 1} of this stream's {sleeps} needs a locked "
            f"expert in CMS level {receiver_level(config.receiver, levels, short[0])} and none is left; set "
            f"learner.model.num_experts>={max(demand)} or drop expansion from learner.sleep.stages"
        )


@register_learner("sleep")
class TextSleepLearner(TextLearner):
    """CMS mixture-of-experts LM that wakes online and sleeps by expansion + knowledge seeding."""

    Config = TextSleepConfig

    def __init__(self, config: Any, info: Any, seed: int):
        levels = len(config.model.cms_periods)
        if not -1 <= config.receiver < levels:
            raise ValueError(f"learner.receiver must be -1 (cycle) or a CMS level in 0..{levels - 1}, got {config.receiver}")
        if "expansion" in config.sleep.stages:
            check_expert_supply(config, info.num_experiences)
        super().__init__(config, info, seed)
        self.sleeps = torch.zeros((), dtype=torch.long)

    def receiver_block(self) -> int:
        """The CMS level this sleep's new expert goes to."""
        return receiver_level(self.config.receiver, len(self.cms), int(self.sleeps))

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

    hooks = ("cms", "frozen_copy", "apply_pending_updates", "receiver_block")

    def __call__(self, learner: TextSleepLearner, context: TextSleepContext) -> Metrics:
        context.teacher = learner.frozen_copy()
        learner.apply_pending_updates()
        receiver = learner.receiver_block()
        blocks = learner.cms
        pruned = blocks[receiver - 1].reset_experts() if receiver > 0 else 0
        expert = blocks[receiver].unlock()
        if expert is None:  # the learner's config check rules this out for the stream it was built for
            raise RuntimeError(f"CMS level {receiver} has no locked expert left (learner.model.num_experts={len(blocks[receiver].experts)})")
        context.new_expert = (receiver, expert)
        active = sum(len(block.unlocked()) for block in blocks)
        return {"block": float(receiver), "unlocked": 1.0, "pruned": float(pruned), "active_experts": float(active)}
