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
  - `expansion`: unlock one pre-allocated masked low-rank expert on h (sleep_utils/lowrank.py),
    function-preserving.
  - `knowledge-seeding`: teacher = the network *with* its fast memory as it was at
    the start of this sleep; student = the slow network after expansion (no fast
    memory). Distill KL(teacher || student) at temperature T on the day's inputs
    plus dreams of older classes, training only the unlocked expert and the head
    (all slow weights when no expert was unlocked) at the stage's own lr; then
    clear the fast memory.
  - `dreaming`: the conditional VAE (sleep_utils/generative.py) first learns the day's data
    while replaying its own dreams of older classes (so it never needs their
    data); then an EXP3 curriculum (sleep_utils/bandit.py) chooses which classes to
    dream, and the slow network rehearses on the dreams (cross-entropy on the
    dreamed class + KL to the teacher) interleaved with the day's data. The arm's
    reward is the student-teacher disagreement on its dreams, 1 - exp(-KL), or
    the learning progress (relative drop of the loss a step brings).

The stages live in sleep_utils/stages.py; `begin_sleep` hands them the teacher
and the day's data in a `VectorSleepContext`. Every random draw comes from a
generator fixed by (seed, experience, stage), so a stage is deterministic under
a seed and a resumed run repeats it exactly.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from somna.kernels.delta_rule import delta_rule
from somna.learners.base import Metrics, SleepConfig, SleepContext, derive_seed
from somna.learners.shared.backbones import MLP
from somna.learners.vector.classifier import MLPClassifier, MLPConfig, experience_tensors
from somna.learners.vector.sleep_utils.generative import ConditionalVAE
from somna.learners.vector.sleep_utils.lowrank import MaskedLowRankExperts
from somna.learners.vector.sleep_utils.stages import DREAM_SALT
from somna.platform.registry import register_learner

SLEEP_STAGES = ["expansion", "knowledge-seeding", "dreaming"]
WAKE_SALT = 1
WAKE_CHUNK = 16  # chunk size of the chunkwise delta rule during wake


@dataclass
class VectorSleepConfig(MLPConfig):
    """`epochs` = offline passes over the day's data in knowledge seeding (wake is always one pass)."""

    name: str = "sleep"
    fast_beta: float = 1.0  # delta-rule write strength in (0, 2]
    fast_scale: float = 5.0  # weight of the fast-memory readout added to the slow logits
    expert_rank: int = 8  # rank of each low-rank expert a sleep unlocks
    vae_hidden: int = 256  # the dreaming VAE's hidden width
    vae_latent: int = 16  # the dreaming VAE's latent size
    sleep: SleepConfig = field(default_factory=lambda: SleepConfig(stages=list(SLEEP_STAGES)))


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


@dataclass
class VectorSleepContext(SleepContext):
    """A sleep of the vector `sleep` learner: the teacher frozen at its start and the day's data."""

    teacher: FastSlowNetwork | None = None  # the network with its fast memory, before expansion
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    unlocked: int | None = None  # the expert `expansion` unlocked in this sleep


@register_learner("sleep")
class VectorSleepLearner(MLPClassifier):
    """Wake: one-pass delta-rule fast memory; sleep: expansion, knowledge seeding, generative dreaming."""

    Config = VectorSleepConfig
    network: FastSlowNetwork  # the parts its stages use (hooks, sleep_utils/stages.py)
    vae: ConditionalVAE
    dreamable: torch.Tensor
    dream_weights: torch.Tensor
    # wake leaves everything sleep needs in the state dict (the fast memory is a buffer), and the sleep
    # loops shard through DataParallel: `resources.sleep.workers` >= 1 may run the sleep on Ray Train
    data_parallel_sleep = True

    def __init__(self, config: Any, info: Any, seed: int):
        super().__init__(config, info, seed)
        if not 0.0 < config.fast_beta <= 2.0:
            raise ValueError(f"learner.fast_beta must be in (0, 2], got {config.fast_beta}")
        if config.fast_scale < 0:
            raise ValueError(f"learner.fast_scale must be >= 0, got {config.fast_scale}")
        experts = MaskedLowRankExperts(self.model.feature_dim, info.num_experiences, config.expert_rank)
        self.network = FastSlowNetwork(self.model, experts, info.num_classes, config.fast_scale)
        in_features = int(torch.tensor(info.input_shape).prod())
        with torch.random.fork_rng():  # seeded init that leaves the caller's global RNG alone
            torch.manual_seed(derive_seed(seed, salt=DREAM_SALT))
            self.vae = ConditionalVAE(in_features, info.num_classes, config.vae_hidden, config.vae_latent)
        self.dream_weights = torch.zeros(info.num_classes, dtype=torch.float64)  # EXP3 state
        self.dreamable = torch.zeros(info.num_classes, dtype=torch.bool)  # classes the VAE has learned

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
    def begin_sleep(self, context: SleepContext) -> VectorSleepContext:
        """Freeze the teacher (network with fast memory, before expansion) and hand the stages the day's data."""
        x, y, _ = experience_tensors(context.experience.train)
        teacher = copy.deepcopy(self.network).eval().requires_grad_(False)
        return VectorSleepContext(**vars(context), teacher=teacher, x=x, y=y)

    def dreams(
        self, classes: torch.Tensor, count: int, generator: torch.Generator, vae: ConditionalVAE | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`count` dreams with labels drawn uniformly from the classes where the bool mask `classes` is set."""
        candidates = torch.nonzero(classes).flatten()
        labels = candidates[torch.randint(len(candidates), (count,), generator=generator)]
        return (vae or self.vae).sample(labels, generator), labels

    # -- inference and state ----------------------------------------------------------------
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Slow logits plus the fast memory's readout."""
        return self.network(x)

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
