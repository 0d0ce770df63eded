"""The sleep learner for classification streams: fast associative wake memory, dreaming, knowledge seeding.

Complementary learning systems in three parts (PAPERS.md: Language Models Need Sleep):

* **Wake** (online, one pass, no gradient): the slow network's penultimate
  features h(x), L2-normalised, key a delta-rule fast memory S (d x C) whose
  values are one-hot labels: S <- S + beta k^T (v - k S) (somna.kernels.delta_rule).
  A class is answerable right after one pass: its keys read back ~ its one-hot.
* **Prediction** adds the two systems in logit space:
  logits(x) = head(h(x)) + fast_scale * normalize(h(x)) S.
  A stored class gets a bonus of about `fast_scale` for inputs near its keys and
  ~0 elsewhere, so the fast memory decides among classes the slow weights do
  not know yet and the slow weights win where they are confident.
* **Sleep** (no past raw data; `learner.sleep.stages` picks and orders the stages):
  - `expansion`: unlock one pre-allocated masked low-rank expert on h (lowrank.py),
    function-preserving.
  - `knowledge-seeding`: teacher = the network *with* its fast memory as it was at
    the start of this sleep; student = the slow network after expansion (no fast
    memory). Distill KL(teacher || student) at temperature T on the day's inputs
    plus dreams of older classes, training only the unlocked expert and the head
    (all slow weights when no expert was unlocked) at the stage's own lr; then
    clear the fast memory.
  - `dreaming`: the conditional VAE (generative.py) first learns the day's data
    while replaying its own dreams of older classes (so it never needs their
    data); then an EXP3 curriculum (curriculum_bandit.py) chooses which classes to
    dream, and the slow network rehearses on the dreams (cross-entropy on the
    dreamed class + KL to the teacher) interleaved with the day's data. The arm's
    reward is the student-teacher disagreement on its dreams, 1 - exp(-KL), or
    the learning progress (relative drop of the loss a step brings).

Every random draw comes from a generator fixed by (seed, experience, stage), so
a stage is deterministic under a seed and a resumed run repeats it exactly.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from somna.kernels import delta_rule
from somna.learners.backbones import MLP
from somna.learners.base import Metrics, SleepConfig, SleepContext, stage_options
from somna.learners.classifier import ClassifierConfig, ClassifierLearner, experience_tensors
from somna.learners.curriculum_bandit import Exp3Curriculum
from somna.learners.distributed import DataParallel
from somna.learners.generative import ConditionalVAE
from somna.learners.lowrank import MaskedLowRankExperts
from somna.learners.optim import build_optimizer
from somna.platform.registry import register_learner

SLEEP_STAGES = ["expansion", "knowledge-seeding", "dreaming"]
WAKE_SALT, EXPAND_SALT, SEED_SALT, DREAM_SALT = 1, 2, 3, 4
WAKE_CHUNK = 16  # chunk size of the chunkwise delta rule during wake


@dataclass
class SleepVisionConfig(ClassifierConfig):
    """`epochs` = offline passes over the day's data in knowledge seeding (wake is always one pass)."""

    name: str = "sleep"
    fast_beta: float = 1.0  # delta-rule write strength in (0, 2]
    fast_scale: float = 5.0  # weight of the fast-memory readout added to the slow logits
    expert_rank: int = 8
    vae_hidden: int = 256
    vae_latent: int = 16
    sleep: SleepConfig = field(default_factory=lambda: SleepConfig(stages=list(SLEEP_STAGES)))


@dataclass
class ExpansionOptions:
    """Expansion takes no options (one expert per sleep, rank from `learner.expert_rank`)."""


@dataclass
class SeedingOptions:
    temperature: float = 2.0
    # Seeding trains only a few new parameters (expert + head) for `epochs` passes over one day, so it
    # steps faster than the learner's lr (seed 0, 40 steps: slow accuracy on the day 0.50 at 1e-3, 0.98 at 1e-2).
    lr: float = 0.01


@dataclass
class DreamingOptions:
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


STAGE_OPTIONS = {"expansion": ExpansionOptions, "knowledge-seeding": SeedingOptions, "dreaming": DreamingOptions}


class FastSlowNetwork(nn.Module):
    """Slow MLP with low-rank experts on its features, plus a delta-rule fast memory keyed by them."""

    def __init__(self, mlp: MLP, experts: MaskedLowRankExperts, num_classes: int, fast_scale: float):
        super().__init__()
        self.mlp, self.experts, self.fast_scale = mlp, experts, fast_scale
        key_dim = mlp.body[0].out_features
        self.register_buffer("memory", torch.zeros(1, 1, key_dim, num_classes))  # S: (B, H, d_k, d_v)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.experts(self.mlp.features(x))

    def keys(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised first-hidden-layer features: they stay general, unlike the class-specialised last layer."""
        return F.normalize(self.mlp.body[:2](x), dim=-1)

    def forward(self, x: torch.Tensor, use_fast_memory: bool = True) -> torch.Tensor:
        logits = self.mlp.head(self.features(x))
        if use_fast_memory:
            logits = logits + self.fast_scale * self.readout(x)
        return logits

    def readout(self, x: torch.Tensor) -> torch.Tensor:
        return self.keys(x) @ self.memory[0, 0]

    @torch.no_grad()
    def write(self, x: torch.Tensor, values: torch.Tensor, beta: float) -> None:
        """One delta-rule pass over the rows of x in order."""
        keys = self.keys(x)[None, None]
        strengths = torch.full(keys.shape[:3], beta)
        _, state = delta_rule(
            keys, keys, values[None, None], strengths, initial_state=self.memory, chunk_size=WAKE_CHUNK
        )
        self.memory.copy_(state)

    def clear_memory(self) -> None:
        self.memory.zero_()

    def slow_parameters(self) -> list[nn.Parameter]:
        active = torch.nonzero(self.experts.active).flatten().tolist()
        return list(self.mlp.parameters()) + [p for i in active for p in self.experts.expert_parameters(i)]


def distillation_kl(teacher: torch.Tensor, student: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-example T^2 * KL(softmax(t/T) || softmax(s/T)) (Hinton et al. 2015; forward KL as in GKD)."""
    log_t = F.log_softmax(teacher / temperature, dim=-1)
    log_s = F.log_softmax(student / temperature, dim=-1)
    return temperature**2 * (log_t.exp() * (log_t - log_s)).sum(-1)


@register_learner("sleep", modality="vector")
class SleepVisionLearner(ClassifierLearner):
    """Wake: one-pass delta-rule fast memory; sleep: expansion, knowledge seeding, generative dreaming."""

    Config = SleepVisionConfig
    # wake leaves everything sleep needs in the state dict (the fast memory is a buffer), and the sleep
    # loops shard through DataParallel: `resources.sleep.workers` >= 1 may run the sleep on Ray Train
    data_parallel_sleep = True

    def __init__(self, config: Any, info: Any, seed: int):
        super().__init__(config, info, seed)
        if not 0.0 < config.fast_beta <= 2.0:
            raise ValueError(f"learner.fast_beta must be in (0, 2], got {config.fast_beta}")
        if config.fast_scale < 0:
            raise ValueError(f"learner.fast_scale must be >= 0, got {config.fast_scale}")
        for stage in config.sleep.stages:  # fail before training, not in the first sleep
            if stage in STAGE_OPTIONS:
                stage_options(STAGE_OPTIONS[stage], stage, self._options(stage))
        experts = MaskedLowRankExperts(self.model.feature_dim, info.num_experiences, config.expert_rank)
        self.network = FastSlowNetwork(self.model, experts, info.num_classes, config.fast_scale)
        in_features = int(torch.tensor(info.input_shape).prod())
        with torch.random.fork_rng():  # seeded init that leaves the caller's global RNG alone
            torch.manual_seed(seed * 1_000_003 + DREAM_SALT)
            self.vae = ConditionalVAE(in_features, info.num_classes, config.vae_hidden, config.vae_latent)
        self.dream_weights = torch.zeros(info.num_classes, dtype=torch.float64)  # EXP3 state
        self.dreamable = torch.zeros(info.num_classes, dtype=torch.bool)  # classes the VAE has learned
        self._teacher: FastSlowNetwork | None = None
        self._day: tuple[torch.Tensor, torch.Tensor] | None = None
        self._unlocked: int | None = None

    def _options(self, stage: str) -> dict[str, Any]:
        return dict((self.config.sleep.options or {}).get(stage) or {})

    # -- wake ---------------------------------------------------------------------------
    def wake(self, experience: Any) -> Metrics:
        """One online pass: read (prequential accuracy), then write each batch into the fast memory."""
        x, y, _ = experience_tensors(experience.train)
        order = torch.randperm(len(y), generator=self.generator(experience.index, WAKE_SALT))
        values = F.one_hot(y, self.info.num_classes).float()
        correct = 0
        self.network.eval()
        for batch in order.split(self.config.batch_size):
            with torch.no_grad():
                correct += int((self.network.readout(x[batch]).argmax(-1) == y[batch]).sum())
            self.network.write(x[batch], values[batch], self.config.fast_beta)
        with torch.no_grad():
            recalled = (self.network.readout(x).argmax(-1) == y).float().mean()
        return {
            "fast_online_accuracy": correct / max(len(y), 1),
            "fast_recall_accuracy": float(recalled),
            "train_examples": float(len(y)),
        }

    # -- sleep ----------------------------------------------------------------------------
    def sleep(self, context: SleepContext) -> Metrics:
        """Freeze the teacher (network with fast memory, before expansion), then run the stages."""
        x, y, _ = experience_tensors(context.experience.train)
        self._day = (x, y)
        self._teacher = copy.deepcopy(self.network).eval().requires_grad_(False)
        self._unlocked = None
        try:
            return super().sleep(context)
        finally:
            self._teacher, self._day, self._unlocked = None, None, None

    def _require_sleep(self, hook: str) -> tuple[FastSlowNetwork, torch.Tensor, torch.Tensor]:
        if self._teacher is None or self._day is None:
            raise RuntimeError(f"{hook}() runs inside sleep(context), which prepares the teacher and the day's data")
        return self._teacher, *self._day

    def expand(self, context: SleepContext, **options: Any) -> Metrics:
        """Unlock the next pre-allocated low-rank expert (function-preserving: its B starts at zero)."""
        stage_options(ExpansionOptions, "expansion", options)
        self._require_sleep("expand")
        experts = self.network.experts
        if experts.num_active < experts.capacity:
            self._unlocked = experts.unlock(self.generator(context.index, EXPAND_SALT))
        return {"expanded": float(self._unlocked is not None), "active_experts": float(experts.num_active)}

    def seed_knowledge(self, context: SleepContext, **options: Any) -> Metrics:
        """Distill the teacher (with fast memory) into the expanded slow student; then clear the fast memory."""
        opts = stage_options(SeedingOptions, "knowledge-seeding", options)
        teacher, x_day, _ = self._require_sleep("seed_knowledge")
        if self._unlocked is not None:
            params = self.network.experts.expert_parameters(self._unlocked) + list(self.model.head.parameters())
        else:
            params = self.network.slow_parameters()
        parallel = DataParallel()
        student, optimizer = parallel.prepare(self.network, build_optimizer(self.config.optimizer, params, opts.lr))
        generator = self.generator(context.index, SEED_SALT)
        old_classes = self.dreamable.clone()
        self.network.train()
        total, steps = 0.0, 0
        for _ in range(self.config.epochs):
            for batch in torch.randperm(len(x_day), generator=generator).split(self.config.batch_size):
                x = x_day[batch]
                if bool(old_classes.any()):
                    x = torch.cat([x, self.dreams(old_classes, len(batch), generator)[0]])
                (x,) = parallel.shard(x)
                loss = distillation_kl(teacher(x), student(x, use_fast_memory=False), opts.temperature).mean()
                optimizer.zero_grad()
                parallel.backward(loss)
                optimizer.step()
                total, steps = total + loss.item(), steps + 1
        self.network.eval()
        self.network.clear_memory()
        trained = float(sum(p.numel() for p in params))
        return {"distill_kl": total / max(steps, 1), "steps": float(steps), "trained_parameters": trained}

    def dream(self, context: SleepContext, **options: Any) -> Metrics:
        """Teach the VAE the day (with self-replay), then rehearse the slow network on an EXP3-chosen curriculum."""
        opts = stage_options(DreamingOptions, "dreaming", options)
        teacher, x_day, y_day = self._require_sleep("dream")
        generator = self.generator(context.index, DREAM_SALT)
        generator_loss = self._learn_generator(x_day, y_day, opts, generator)
        curriculum = Exp3Curriculum(self.dream_weights, opts.exploration)
        parallel = DataParallel()
        optimizer = build_optimizer(self.config.optimizer, self.network.slow_parameters(), self.config.lr)
        network, optimizer = parallel.prepare(self.network, optimizer)
        real_size = max(1, round(opts.batch_size * len(y_day.unique()) / int(self.dreamable.sum())))
        self.network.train()
        total, reward_sum = 0.0, 0.0
        for _ in range(opts.steps):
            arms, policy = curriculum.draw(self.dreamable, opts.batch_size, generator)
            x_dream, my_arms = parallel.shard(self.vae.sample(arms, generator), arms)
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
            rewards = self._rewards(opts, disagreement.detach(), per_dream.detach(), x_dream, my_arms, teacher)
            # every rank updates EXP3 with the whole batch's rewards, so all draw the same next arms
            rewards = parallel.gather(rewards, len(arms))
            curriculum.update(arms, rewards, policy)
            total, reward_sum = total + loss.item(), reward_sum + float(rewards.mean())
        self.network.eval()
        return {
            "generator_loss": generator_loss,
            "rehearsal_loss": total / max(opts.steps, 1),
            "mean_reward": reward_sum / max(opts.steps, 1),
            "curriculum_entropy": curriculum.entropy(self.dreamable),
            "dreamable_classes": float(self.dreamable.sum()),
        }

    def _rewards(
        self,
        opts: DreamingOptions,
        disagreement: torch.Tensor,
        before: torch.Tensor,
        x_dream: torch.Tensor,
        arms: torch.Tensor,
        teacher: FastSlowNetwork,
    ) -> torch.Tensor:
        """Per-dream reward in [0, 1]: 1 - exp(-KL) (disagreement) or the relative loss drop of the step (progress)."""
        if opts.reward == "disagreement":
            return 1.0 - torch.exp(-disagreement)
        with torch.no_grad():
            student = self.network(x_dream, use_fast_memory=False)
            kl = distillation_kl(teacher(x_dream), student, opts.temperature)
            after = F.cross_entropy(student, arms, reduction="none") + opts.distill_weight * kl
        return ((before - after) / before.clamp_min(1e-8)).clamp(0.0, 1.0)

    def _learn_generator(
        self, x_day: torch.Tensor, y_day: torch.Tensor, opts: DreamingOptions, generator: torch.Generator
    ) -> float:
        """Train the VAE on the day's data plus its own dreams of the classes it already knew (self-replay)."""
        old_classes = self.dreamable.clone()
        previous = copy.deepcopy(self.vae).eval() if bool(old_classes.any()) else None
        parallel = DataParallel()
        vae, optimizer = parallel.prepare(self.vae, build_optimizer(self.config.optimizer, self.vae.parameters(), self.config.lr))
        replay_size = max(1, round(opts.batch_size * int(old_classes.sum()) / len(y_day.unique())))
        self.vae.train()
        total = 0.0
        for _ in range(opts.generator_steps):
            real = torch.randint(len(y_day), (opts.batch_size,), generator=generator)
            x, y = x_day[real], y_day[real]
            if previous is not None:  # as many dreams per old class as real examples per new class
                x_old, y_old = self.dreams(old_classes, replay_size, generator, vae=previous)
                x, y = torch.cat([x, x_old]), torch.cat([y, y_old])
            loss = vae(*parallel.shard(x, y, self.vae.noise(len(y), generator)))
            optimizer.zero_grad()
            parallel.backward(loss)
            optimizer.step()
            total += loss.item()
        self.vae.eval()
        self.dreamable[y_day.unique()] = True
        return total / max(opts.generator_steps, 1)

    def dreams(
        self, classes: torch.Tensor, count: int, generator: torch.Generator, vae: ConditionalVAE | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`count` dreams with labels drawn uniformly from the classes where the bool mask `classes` is set."""
        candidates = torch.nonzero(classes).flatten()
        labels = candidates[torch.randint(len(candidates), (count,), generator=generator)]
        return (vae or self.vae).sample(labels, generator), labels

    # -- inference and state ----------------------------------------------------------------
    def predict(self, batch: dict[str, torch.Tensor], task_id: int | None = None) -> torch.Tensor:
        logits = self.network(batch["x"].float())
        if task_id is not None:
            logits = self.masked(logits, torch.full((len(logits),), task_id, dtype=torch.long))
        return logits.argmax(dim=-1)

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {f"network.{k}": v.clone() for k, v in self.network.state_dict().items()}
        state |= {f"vae.{k}": v.clone() for k, v in self.vae.state_dict().items()}
        return state | {"dream_weights": self.dream_weights.clone(), "dreamable": self.dreamable.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        network = {k.removeprefix("network."): v for k, v in state.items() if k.startswith("network.")}
        self.network.load_state_dict(network)
        self.vae.load_state_dict({k.removeprefix("vae."): v for k, v in state.items() if k.startswith("vae.")})
        self.dream_weights.copy_(state["dream_weights"])
        self.dreamable.copy_(state["dreamable"])
