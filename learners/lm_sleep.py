"""The sleep learner for language models, and on-policy self-distillation (its `opsd` baseline).

Sleep (PAPERS.md, "Language Models Need Sleep"), order compute -> consolidate -> update:
  expand          teacher := the model as woken (pending slow-block update not applied);
                  student := the model with that update applied, the sender block's
                  earlier low-rank experts reset (synaptic pruning) and one fresh expert
                  unlocked in the receiving block (function-preserving: its `up` is zero).
  seed_knowledge  distill the teacher into the student (GKD) and reinforce imitation of
                  teacher samples (GRPO), training only the new expert; without a
                  preceding expansion it trains the receiving block instead.
The receiving block l* cycles through CMS blocks 1..L-1 (sleep k uses 1 + k mod (L-1)),
its sender is l*-1, so knowledge climbs the frequency ladder over sleeps; `receiver`
pins it. Appending "dreaming" to `sleep.stages` adds the dream hook (lm_dreaming). Ablations are config switches: -expansion drops "expansion" from
`sleep.stages`; -imitation sets knowledge-seeding alpha=1; -semantic reward gamma=0.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from somna.learners.base import Metrics, SleepConfig, SleepContext
from somna.learners.lm_dreaming import DreamingMixin
from somna.learners.lm_learner import TextLearner, TextLearnerConfig
from somna.learners.lm_seeding import distill, imitate, sample
from somna.platform.registry import register_learner


@dataclass
class SleepLearnerConfig(TextLearnerConfig):
    name: str = "sleep"
    sleep: SleepConfig = field(default_factory=lambda: SleepConfig(stages=["expansion", "knowledge-seeding"]))
    receiver: int = -1  # CMS block that receives each sleep's new expert; -1 cycles through 1..L-1


@register_learner("sleep", modality="text")
class SleepLearner(DreamingMixin, TextLearner):
    """CMS mixture-of-experts LM that wakes online and sleeps by expansion + knowledge seeding."""

    Config = SleepLearnerConfig

    def __init__(self, config: Any, info: Any, seed: int):
        super().__init__(config, info, seed)
        blocks = len(config.model.cms_periods)
        if not -1 <= config.receiver < blocks:
            raise ValueError(f"learner.receiver must be -1 (cycle) or a CMS block in 0..{blocks - 1}, got {config.receiver}")
        self.sleeps = torch.zeros((), dtype=torch.long)
        self._teacher: torch.nn.Module | None = None
        self._new_expert: tuple[int, int] | None = None

    def receiver_block(self) -> int:
        if self.config.receiver >= 0:
            return self.config.receiver
        blocks = len(self.model.cms)
        return 1 + int(self.sleeps) % (blocks - 1) if blocks > 1 else 0

    def _snapshot_teacher(self) -> torch.nn.Module:
        """The model before expansion/update: LM_theta of the paper (frozen)."""
        teacher = copy.deepcopy(self.model).eval()
        for parameter in teacher.parameters():
            parameter.requires_grad_(False)
        return teacher

    # -- sleep hooks (called by the registered stages in learners/stages.py) ------------------
    def expand(self, context: SleepContext, **options: Any) -> Metrics:
        if options:
            raise ValueError(f"learner.sleep.options.expansion takes no options, got {', '.join(options)}")
        self._teacher = self._snapshot_teacher()
        self.apply_pending_updates()
        receiver = self.receiver_block()
        pruned = self.model.reset_experts(receiver - 1) if receiver > 0 else 0
        expert = self.model.unlock_expert(receiver)
        self._new_expert = None if expert is None else (receiver, expert)
        active = sum(len(block.unlocked()) for block in self.model.cms)
        return {"block": float(receiver), "unlocked": float(expert is not None), "pruned": float(pruned), "active_experts": float(active)}

    def seed_knowledge(
        self,
        context: SleepContext,
        *,
        lmbda: float = 0.5,
        beta: float = 0.5,
        alpha: float = 0.5,
        gamma: float = 0.5,
        z0: float = 0.5,
        steps: int = 8,
        lr: float = 1e-2,
        num_prompts: int = 16,
        prompt_words: int = 3,
        batch_size: int = 4,
        num_generations: int = 4,
        max_new_tokens: int = 24,
        prefix_fraction: float = 0.5,
    ) -> Metrics:
        """L_KS = (1-alpha) E r - alpha E D over teacher samples, training only what expansion unlocked."""
        for key, value in {"lmbda": lmbda, "beta": beta, "alpha": alpha, "gamma": gamma, "z0": z0, "prefix_fraction": prefix_fraction}.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"learner.sleep.options.knowledge-seeding.{key} must be in [0, 1], got {value}")
        teacher = self._teacher or self._snapshot_teacher()
        self.apply_pending_updates()
        trainable = self._trainable_for_seeding()
        seed = self.seed * 1_000_003 + context.index * 101 + 7
        prompts = self._sleep_prompts(context, num_prompts, prompt_words, seed)
        completions = sample(teacher, self.tokenizer, prompts, max_new_tokens, seed)
        metrics: Metrics = {"trainable_params": float(sum(p.numel() for p in trainable))}
        self._train_only(trainable)
        try:
            if alpha > 0:
                metrics |= distill(
                    self.model, teacher, self.tokenizer, prompts, completions,
                    lmbda=lmbda, beta=beta, steps=steps, lr=alpha * lr, batch_size=batch_size, max_new_tokens=max_new_tokens, seed=seed,
                )
            if alpha < 1:
                dreams = [f"{p} {c}" for p, c in zip(prompts, completions)]
                cuts = [max(1, int(len(d) * prefix_fraction)) for d in dreams]
                metrics |= imitate(
                    self.model, self.tokenizer, [d[:k] for d, k in zip(dreams, cuts)], [d[k:] for d, k in zip(dreams, cuts)],
                    gamma=gamma, z0=z0, steps=steps, lr=(1 - alpha) * lr, num_generations=num_generations, max_new_tokens=max_new_tokens, seed=seed,
                )
        finally:
            self._train_only(list(self.model.parameters()))
            self.model.eval()
            self._teacher, self._new_expert = None, None
        return metrics

    def _trainable_for_seeding(self) -> list[torch.nn.Parameter]:
        if self._new_expert is not None:
            block, expert = self._new_expert
            return list(self.model.cms[block].experts[expert].parameters())
        return list(self.model.cms[self.receiver_block()].parameters())

    def _train_only(self, parameters: list[torch.nn.Parameter]) -> None:
        keep = {id(p) for p in parameters}
        for parameter in self.model.parameters():
            parameter.requires_grad_(id(parameter) in keep)

    def _sleep_prompts(self, context: SleepContext, count: int, words: int, seed: int) -> list[str]:
        """Openings of the experience's documents: the cues the teacher dreams from."""
        texts = self.training_texts(context.experience)
        order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(seed)).tolist()
        picks = (order * (count // max(len(order), 1) + 1))[:count]
        return [" ".join(texts[i].split()[:words]) for i in picks]

    def sleep(self, context: SleepContext) -> Metrics:
        metrics = super().sleep(context)
        self.sleeps += 1
        return metrics

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**super().state_dict(), "sleeps": self.sleeps.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        super().load_state_dict(state)
        self.sleeps = state["sleeps"].clone()


@dataclass
class OPSDConfig(SleepLearnerConfig):
    name: str = "opsd"
    sleep: SleepConfig = field(
        default_factory=lambda: SleepConfig(stages=["knowledge-seeding"], options={"knowledge-seeding": {"lmbda": 1.0, "alpha": 1.0}})
    )


@register_learner("opsd", modality="text")
class OPSDLearner(SleepLearner):
    """On-policy self-distillation only: no expansion, no imitation (lambda = 1, alpha = 1)."""

    Config = OPSDConfig
