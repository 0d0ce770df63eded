"""The vector `sleep` learner's three sleep stages: expansion, knowledge seeding, generative dreaming.

Each stage reads the sleep's `VectorSleepContext` (learners/vector/sleep.py: the
teacher frozen at the start of the sleep and the day's data) and the learner's
parts it declares in `hooks`. Every random draw comes from a generator fixed by
(seed, experience, stage salt), so a stage is deterministic under a seed and a
resumed run repeats it exactly. Training loops shard through `DataParallel`, so
the sleep can run on Ray Train workers.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from somna.learners.base import Metrics
from somna.learners.shared.distributed import DataParallel
from somna.learners.shared.optimizers import build_optimizer
from somna.learners.stages import SleepStage
from somna.learners.vector.sleep_utils.bandit import Exp3Curriculum
from somna.platform.registry import register_sleep_stage

if TYPE_CHECKING:
    from somna.learners.vector.sleep import FastSlowNetwork, VectorSleepLearner, VectorSleepContext

EXPAND_SALT, SEED_SALT, DREAM_SALT = 2, 3, 4


def distillation_kl(teacher: torch.Tensor, student: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-example T^2 * KL(softmax(t/T) || softmax(s/T)) (Hinton et al. 2015; forward KL as in GKD)."""
    log_t = F.log_softmax(teacher / temperature, dim=-1)
    log_s = F.log_softmax(student / temperature, dim=-1)
    return temperature**2 * (log_t.exp() * (log_t - log_s)).sum(-1)


@register_sleep_stage("expansion", modality="vector")
class ExpertExpansion(SleepStage):
    """Unlock the next pre-allocated low-rank expert on the features (function-preserving: its B starts at zero)."""

    hooks = ("network",)

    def __call__(self, learner: VectorSleepLearner, context: VectorSleepContext) -> Metrics:
        experts = learner.network.experts
        if experts.num_active < experts.capacity:
            context.unlocked = experts.unlock(learner.generator(context.index, EXPAND_SALT))
        return {"expanded": float(context.unlocked is not None), "active_experts": float(experts.num_active)}


@dataclass
class DistillationSeedingOptions:
    temperature: float = 2.0
    # Seeding trains only a few new parameters (expert + head) for `epochs` passes over one day, so it
    # steps faster than the learner's lr (seed 0, 40 steps: slow accuracy on the day 0.50 at 1e-3, 0.98 at 1e-2).
    lr: float = 0.01


@register_sleep_stage("knowledge-seeding", modality="vector")
class DistillationSeeding(SleepStage):
    """Distill the teacher (with fast memory) into the expanded slow student (no fast memory); then clear the fast memory.

    Inputs: the day's data plus dreams of older classes. Trains only the unlocked
    expert and the head (every slow weight when no expert was unlocked) for
    `learner.epochs` passes at the stage's own lr."""

    Options = DistillationSeedingOptions
    hooks = ("network", "model", "dreams", "dreamable")

    def __call__(self, learner: VectorSleepLearner, context: VectorSleepContext) -> Metrics:
        opts, network, config = self.options, learner.network, learner.config
        if context.unlocked is not None:
            params = network.experts.expert_parameters(context.unlocked) + list(learner.model.head.parameters())
        else:
            params = network.slow_parameters()
        parallel = DataParallel()
        student, optimizer = parallel.prepare(network, build_optimizer(config.optimizer, params, opts.lr))
        generator = learner.generator(context.index, SEED_SALT)
        old_classes = learner.dreamable.clone()
        network.train()
        total, steps = 0.0, 0
        for _ in range(config.epochs):
            for batch in torch.randperm(len(context.x), generator=generator).split(config.batch_size):
                x = context.x[batch]
                if bool(old_classes.any()):
                    x = torch.cat([x, learner.dreams(old_classes, len(batch), generator)[0]])
                (x,) = parallel.shard(x)
                loss = distillation_kl(context.teacher(x), student(x, use_fast_memory=False), opts.temperature).mean()
                optimizer.zero_grad()
                parallel.backward(loss)
                optimizer.step()
                total, steps = total + loss.item(), steps + 1
        network.eval()
        network.clear_memory()
        trained = float(sum(p.numel() for p in params))
        return {"distill_kl": total / max(steps, 1), "steps": float(steps), "trained_parameters": trained}


@dataclass
class GenerativeDreamingOptions:
    generator_steps: int = 1200  # VAE updates per sleep (day data + self-replay of older classes)
    steps: int = 500  # rehearsal steps of the slow network
    batch_size: int = 64  # dreams per rehearsal step; real_weight > 0 adds batch_size * new/seen day examples
    temperature: float = 2.0
    distill_weight: float = 1.0
    # Cross-entropy weight of the day's real data next to the dreams. Default 0: real new-class images
    # next to blurrier dreams of old classes teach "sharp = new class" (split-digits seed 0: ACC 0.37 at 0.3).
    real_weight: float = 0.0
    exploration: float = 0.2  # EXP3 gamma
    reward: str = "disagreement"  # "disagreement" | "progress"

    def __post_init__(self) -> None:
        if self.reward not in ("disagreement", "progress"):
            raise ValueError(
                f"learner.sleep.options.dreaming.reward must be one of: disagreement, progress; got {self.reward!r}"
            )


@register_sleep_stage("dreaming", modality="vector")
class GenerativeDreaming(SleepStage):
    """Teach the conditional VAE the day (with self-replay), then rehearse the slow network on an EXP3-chosen curriculum.

    The VAE learns the day's data while replaying its own dreams of older classes
    (so it never needs their data); then the EXP3 bandit chooses which classes to
    dream and the slow network rehearses on the dreams (cross-entropy on the
    dreamed class + KL to the teacher). An arm's reward is the student-teacher
    disagreement on its dreams, 1 - exp(-KL), or the learning progress (relative
    drop of the loss a step brings)."""

    Options = GenerativeDreamingOptions
    hooks = ("network", "vae", "dreams", "dreamable", "dream_weights")

    def __call__(self, learner: VectorSleepLearner, context: VectorSleepContext) -> Metrics:
        opts, network_module, teacher = self.options, learner.network, context.teacher
        x_day, y_day = context.x, context.y
        generator = learner.generator(context.index, DREAM_SALT)
        generator_loss = self.learn_generator(learner, x_day, y_day, generator)
        curriculum = Exp3Curriculum(learner.dream_weights, opts.exploration)
        parallel = DataParallel()
        optimizer = build_optimizer(learner.config.optimizer, network_module.slow_parameters(), learner.config.lr)
        network, optimizer = parallel.prepare(network_module, optimizer)
        real_size = max(1, round(opts.batch_size * len(y_day.unique()) / int(learner.dreamable.sum())))
        network_module.train()
        total, reward_sum = 0.0, 0.0
        for _ in range(opts.steps):
            arms, policy = curriculum.draw(learner.dreamable, opts.batch_size, generator)
            x_dream, my_arms = parallel.shard(learner.vae.sample(arms, generator), arms)
            student = network(x_dream, use_fast_memory=False)
            disagreement = distillation_kl(teacher(x_dream), student, opts.temperature)  # also the EXP3 reward
            per_dream = F.cross_entropy(student, my_arms, reduction="none") + opts.distill_weight * disagreement
            loss = per_dream.mean()
            if opts.real_weight > 0:
                (real,) = parallel.shard(torch.randint(len(y_day), (real_size,), generator=generator))
                real_logits = network(x_day[real], use_fast_memory=False)
                loss = loss + opts.real_weight * F.cross_entropy(real_logits, y_day[real])
            optimizer.zero_grad()
            parallel.backward(loss)
            optimizer.step()
            rewards = self.rewards(network_module, disagreement.detach(), per_dream.detach(), x_dream, my_arms, teacher)
            # every rank updates EXP3 with the whole batch's rewards, so all draw the same next arms
            rewards = parallel.gather(rewards, len(arms))
            curriculum.update(arms, rewards, policy)
            total, reward_sum = total + loss.item(), reward_sum + float(rewards.mean())
        network_module.eval()
        return {
            "generator_loss": generator_loss,
            "rehearsal_loss": total / max(opts.steps, 1),
            "mean_reward": reward_sum / max(opts.steps, 1),
            "curriculum_entropy": curriculum.entropy(learner.dreamable),
            "dreamable_classes": float(learner.dreamable.sum()),
        }

    def rewards(
        self,
        network: FastSlowNetwork,
        disagreement: torch.Tensor,
        before: torch.Tensor,
        x_dream: torch.Tensor,
        arms: torch.Tensor,
        teacher: FastSlowNetwork,
    ) -> torch.Tensor:
        """Per-dream reward in [0, 1]: 1 - exp(-KL) (disagreement) or the relative loss drop of the step (progress)."""
        opts = self.options
        if opts.reward == "disagreement":
            return 1.0 - torch.exp(-disagreement)
        with torch.no_grad():
            student = network(x_dream, use_fast_memory=False)
            kl = distillation_kl(teacher(x_dream), student, opts.temperature)
            after = F.cross_entropy(student, arms, reduction="none") + opts.distill_weight * kl
        return ((before - after) / before.clamp_min(1e-8)).clamp(0.0, 1.0)

    def learn_generator(
        self, learner: VectorSleepLearner, x_day: torch.Tensor, y_day: torch.Tensor, generator: torch.Generator
    ) -> float:
        """Train the VAE on the day's data plus its own dreams of the classes it already knew (self-replay)."""
        opts = self.options
        old_classes = learner.dreamable.clone()
        previous = copy.deepcopy(learner.vae).eval() if bool(old_classes.any()) else None
        parallel = DataParallel()
        optimizer = build_optimizer(learner.config.optimizer, learner.vae.parameters(), learner.config.lr)
        vae, optimizer = parallel.prepare(learner.vae, optimizer)
        replay_size = max(1, round(opts.batch_size * int(old_classes.sum()) / len(y_day.unique())))
        learner.vae.train()
        total = 0.0
        for _ in range(opts.generator_steps):
            real = torch.randint(len(y_day), (opts.batch_size,), generator=generator)
            x, y = x_day[real], y_day[real]
            if previous is not None:  # as many dreams per old class as real examples per new class
                x_old, y_old = learner.dreams(old_classes, replay_size, generator, vae=previous)
                x, y = torch.cat([x, x_old]), torch.cat([y, y_old])
            loss = vae(*parallel.shard(x, y, learner.vae.noise(len(y), generator)))
            optimizer.zero_grad()
            parallel.backward(loss)
            optimizer.step()
            total += loss.item()
        learner.vae.eval()
        learner.dreamable[y_day.unique()] = True
        return total / max(opts.generator_steps, 1)
