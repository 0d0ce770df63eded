"""The sleep learner for language models (wake into a fast memory, sleep into a new expert), and its `expansion` stage.

PAPERS.md, "Language Models Need Sleep". One experience is:
  wake               the passages are read into the fast memory (`learner.fast_memory`, see
                     text/fast_memory.py: CMS level 0's MLP, the passages kept in context, or
                     the carried state of the base's memory-kernel mixers);
                     the core, the slow CMS levels and every consolidated expert do not change.
  sleep begins       teacher := the model with its fast memory (frozen; `teacher_experts=false`
                     masks its consolidated experts, so it reads with the base's own skill); the fast memory is
                     reset ("synaptic pruning"), so the model being trained, the student, is
                     the slow model without it; slow := a frozen copy of that student.
  expansion          one locked low-rank expert of the receiving CMS level is unlocked
                     (function-preserving: its `up` starts at zero).
  knowledge-seeding  consolidate: the new expert (its router row included) learns the teacher's
                     answers about the new passages and, on the slow model's own generations,
                     to leave the slow model's outputs alone (text/seeding.py).
                     With `rehearse_questions`, it also keeps some of the questions it wrote
                     itself (cues: no passage, no answer) so later sleeps protect what the
                     slow model answers to them (`rehearsal_cues`).
  dreaming           (optional) ReST-EM rehearsal of self-generated data (text/dreaming.py),
                     also training only the new expert.
The fast level 0 always sends; the receiving level cycles through the slow levels 1..L-1 in the
CMS order (sleep k gives level 1 + k mod (L-1) its expert), so it works with 2, 3 or 4 levels,
and each slow level holds the experts of its own sleeps (`learner.receiver` pins one). Every sleep
of the stream must find a locked expert in its receiving level: the learner checks that when it
is built (a config error names the key to raise). Ablations are config switches:
-expansion drops "expansion" from `sleep.stages` (seeding then trains the whole receiving level);
-imitation sets knowledge-seeding alpha=1; -semantic reward gamma=0; the fast memory is
`learner.fast_memory`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch

from somna.learners.base import Metrics, SleepConfig, SleepContext
from somna.learners.stages import SleepStage
from somna.learners.text.encoding import texts_from_bytes, texts_to_bytes
from somna.learners.text.experts import cms_blocks
from somna.learners.text.fast_memory import FastMemory, FastMemoryChoice, build_fast_memory
from somna.learners.text.learner import TextLearner, TextLearnerConfig, TextSleepContext
from somna.platform.registry import register_learner, register_sleep_stage


@dataclass
class TextSleepConfig(TextLearnerConfig):
    name: str = "sleep"
    sleep: SleepConfig = field(default_factory=lambda: SleepConfig(stages=["expansion", "knowledge-seeding"]))
    receiver: int = -1  # slow CMS level (1..L-1) that receives each sleep's new expert; -1 cycles through 1..L-1
    fast_memory: FastMemoryChoice = FastMemoryChoice.context  # what wake writes: context (the passages, kept in context), cms (CMS level 0's MLP) or kernel (the state of a kernel-mixer base)
    teacher_experts: bool = True  # the sleep's teacher keeps the consolidated experts; false: they are masked in the teacher, which reads its fast memory with the base's own skill


def receiver_level(receiver: int, levels: int, sleep: int) -> int:
    """The slow CMS level that sleep number `sleep` gives its new expert to (`receiver` -1: cycle through 1..L-1)."""
    return receiver if receiver >= 1 else 1 + sleep % (levels - 1)


def check_expert_supply(config: Any, sleeps: int) -> None:
    """A ValueError unless each of the stream's `sleeps` expansions finds a locked expert in its receiving level."""
    levels, available = len(config.model.cms_periods), config.model.num_experts
    demand = Counter(receiver_level(config.receiver, levels, sleep) for sleep in range(sleeps))
    level, needed = demand.most_common(1)[0]
    if needed > available:
        raise ValueError(
            f"learner.model.num_experts={available} runs out: this stream's {sleeps} sleeps give CMS level {level} {needed} "
            f"experts; set learner.model.num_experts>={needed}, add CMS levels, or drop expansion from learner.sleep.stages"
        )


@register_learner("sleep")
class TextSleepLearner(TextLearner):
    """Wakes into a fast memory with the slow weights frozen; sleeps by expansion + knowledge seeding into a new expert."""

    Config = TextSleepConfig
    fast_memory: FastMemory  # what wake writes (learner.fast_memory)
    rehearsal_cues: list[str]  # closed-book questions the model wrote itself in earlier sleeps (knowledge-seeding.rehearse_questions)

    def __init__(self, config: Any, info: Any, seed: int):
        levels = len(config.model.cms_periods)
        if levels < 2:
            raise ValueError(f"learner.model.cms_periods needs >= 2 levels (a fast level 0 and a slow one to consolidate into), got {levels}")
        if not (config.receiver == -1 or 1 <= config.receiver < levels):
            raise ValueError(f"learner.receiver must be -1 (cycle) or a slow CMS level in 1..{levels - 1}, got {config.receiver}")
        self.fast_memory = build_fast_memory(config.fast_memory)
        if "expansion" in config.sleep.stages:
            check_expert_supply(config, info.num_experiences)
        super().__init__(config, info, seed)
        seeding = self.sleep_stages.get("knowledge-seeding")
        if seeding is not None and seeding.options.protect_where == "gate-open" and not config.model.expert_keys:
            raise ValueError("learner.sleep.options.knowledge-seeding.protect_where=gate-open reads the new expert's keyed gate: set learner.model.expert_keys > 0")
        self.fast_memory.bind(self)
        self.sleeps = torch.zeros((), dtype=torch.long)
        self.rehearsal_cues = []

    def wake(self, experience: Any) -> Metrics:
        """Read the passages into the fast memory; nothing else may change (`requires_grad` only on the store)."""
        self.model.zero_grad(set_to_none=True)
        self._optimizers = None
        return self.fast_memory.write(self, self.training_texts(experience), experience.index)

    def begin_sleep(self, context: SleepContext) -> TextSleepContext:
        """Teacher = the model with its fast memory (with `teacher_experts` false, its experts masked: earlier sleeps'
        experts also act on reading and lower what the teacher gets right); then reset the store: the student starts
        as the slow model."""
        context = super().begin_sleep(context)
        context.teacher = self.frozen_copy()
        if not self.config.teacher_experts:
            for block in cms_blocks(context.teacher):
                block.mask_experts()
        self.fast_memory.reset(self)
        context.slow = self.frozen_copy()
        return context

    def receiver_block(self) -> int:
        """The CMS level this sleep's new expert goes to."""
        return receiver_level(self.config.receiver, len(self.cms), int(self.sleeps))

    def sleep_parameters(self, context: TextSleepContext) -> list[torch.nn.Parameter]:
        """The new expert (down, up, router row); without expansion (the -expansion ablation), the receiving level."""
        if context.new_expert is not None:
            block, expert = context.new_expert
            return list(self.cms[block].experts[expert].parameters())
        return list(self.cms[self.receiver_block()].parameters())

    def end_sleep(self, context: TextSleepContext) -> None:
        super().end_sleep(context)
        self.sleeps += 1

    def pending_state(self) -> dict[str, torch.Tensor]:
        return super().pending_state() | self.fast_memory.state()

    def load_pending_state(self, state: dict[str, torch.Tensor]) -> None:
        super().load_pending_state(state)
        self.fast_memory.load_state(self, state)

    def state_dict(self) -> dict[str, torch.Tensor]:
        cues, lengths = texts_to_bytes(self.rehearsal_cues)
        return {**super().state_dict(), "sleeps": self.sleeps.clone(), "rehearsal_cues.bytes": cues, "rehearsal_cues.lengths": lengths}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        super().load_state_dict(state)
        self.sleeps = state["sleeps"].clone()
        saved = "rehearsal_cues.bytes" in state  # a checkpoint from before the cues existed holds none
        self.rehearsal_cues = texts_from_bytes(state["rehearsal_cues.bytes"], state["rehearsal_cues.lengths"]) if saved else []


@register_sleep_stage("expansion", modality="text")
class CMSExpansion(SleepStage):
    """Unlock one fresh expert in the receiving slow level (function-preserving)."""

    hooks = ("cms", "receiver_block")

    def __call__(self, learner: TextSleepLearner, context: TextSleepContext) -> Metrics:
        receiver = learner.receiver_block()
        blocks = learner.cms
        expert = blocks[receiver].unlock()
        if expert is None:  # the learner's config check rules this out for the stream it was built for
            raise RuntimeError(f"CMS level {receiver} has no locked expert left (learner.model.num_experts={len(blocks[receiver].experts)})")
        context.new_expert = (receiver, expert)
        active = sum(len(block.unlocked()) for block in blocks)
        return {"block": float(receiver), "unlocked": 1.0, "active_experts": float(active)}
