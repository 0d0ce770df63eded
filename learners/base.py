"""The Learner interface every continual learner implements, and the seeds its random draws come from.

A learner takes in a stream one experience at a time. `wake` is where it sees
the experience's data (once in the online setting; `epochs` passes otherwise;
test-time memory updates allowed). `sleep` is offline consolidation with no
access to past raw data except what the learner stores itself (a buffer counts
toward its memory budget). The loop calls, per experience:
wake(experience) -> sleep(context) -> evaluate(every experience).

Sleep runs the registered stages named in `learner.sleep.stages` (see
learners/stages.py): `begin_sleep` may extend the context with what every stage
of this learner needs (a frozen teacher, the day's data), each stage runs with
that context, and `end_sleep` finishes (e.g. applies a pending update).

Learners do not import the curricula room; they rely on these attributes of
what the loop hands them (see somna.curricula.base):
  experience.index, .train, .test, .dev (datasets.Dataset; dev may be None), .classes, .task_id, .metadata
  (`dev` is for rewards, selection and tuning; only evaluation reads `test`)
  info.scenario, .num_experiences, .num_classes, .input_shape, .modality,
  .classes_per_experience
"""

from __future__ import annotations

import abc
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from somna.learners.stages import build_sleep_stages

Metrics = dict[str, float]


# -- seeds ---------------------------------------------------------------------------------
def derive_seed(seed: int, experience: int = 0, salt: int = 0) -> int:
    """The seed of one stream of random draws, fixed by (run seed, experience, salt).

    A learner draws everything from generators seeded this way (a different salt per
    purpose: shuffling, buffer slots, dreams...), so a run resumed after experience i
    draws exactly the numbers an uninterrupted run draws."""
    return seed * 1_000_003 + experience * 101 + salt


def seeded_generator(seed: int, experience: int = 0, salt: int = 0) -> torch.Generator:
    """A CPU generator seeded with `derive_seed(seed, experience, salt)`."""
    return torch.Generator().manual_seed(derive_seed(seed, experience, salt))


def phase_seed(seed: int, experience: int, phase: str) -> int:
    """The seed of the global RNGs at the start of a loop phase ("wake", "sleep", "eval").

    The loop reseeds torch, numpy and `random` before every phase, so code that uses the
    global RNG (library trainers, nn.init) starts each phase from the same state whether
    the run went straight through, was resumed, or ran in another process."""
    digest = hashlib.sha256(f"{seed}/{experience}/{phase}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**63)


# -- configuration and context -----------------------------------------------------------------
@dataclass
class SleepConfig:
    """Which registered sleep stages run, in order, and their options (stage name -> its Options fields)."""

    stages: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class LearnerConfig:
    """Fields every learner accepts; a learner's own Config subclasses this."""

    name: str = "finetune"  # a registered learner (`somna learners`)
    sleep: SleepConfig = field(default_factory=SleepConfig)


@dataclass
class SleepContext:
    """What a sleep phase may use: the experience just woken on, never older raw data.

    A learner's `begin_sleep` may return a subclass carrying more (a teacher snapshot,
    what an earlier stage of the same sleep unlocked); stages read and fill it."""

    experience: Any
    num_experiences: int
    seed: int
    artifacts_dir: Path | None = None  # where stages may write readable artifacts (e.g. dreams.jsonl)

    @property
    def index(self) -> int:
        return self.experience.index


# -- the interface ------------------------------------------------------------------------------
class Learner(abc.ABC):
    """Base class: subclass it, give it a `Config` dataclass, register it with `@register_learner`."""

    Config: ClassVar[type] = LearnerConfig
    modality: ClassVar[str] = "vector"  # the curricula it learns from: "vector" | "text"

    def __init__(self, config: Any, info: Any, seed: int):
        self.config = config
        self.info = info
        self.seed = seed
        self.sleep_stages = build_sleep_stages(config.sleep, self.modality)

    @abc.abstractmethod
    def wake(self, experience: Any) -> Metrics:
        """Take in one experience; return metrics to log (losses, sizes)."""

    def sleep(self, context: SleepContext) -> Metrics:
        """Run the configured sleep stages in order; each stage's metrics are prefixed by its name."""
        context = self.begin_sleep(context)
        metrics: Metrics = {}
        for name, stage in self.sleep_stages.items():
            for key, value in stage(self, context).items():
                metrics[f"{name}/{key}"] = value
        self.end_sleep(context)
        return metrics

    def begin_sleep(self, context: SleepContext) -> SleepContext:
        """The context every stage of this sleep receives; override to add what they share."""
        return context

    def end_sleep(self, context: SleepContext) -> None:
        """Called after the last stage (also when there is none)."""

    @abc.abstractmethod
    def predict(self, batch: dict[str, torch.Tensor], task_id: int | None = None) -> Any:
        """Predicted labels for a batch (columns as in the experience datasets)."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor needed to resume this learner exactly (saved with safetensors)."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `state_dict` returned."""

    def generator(self, experience_index: int, salt: int = 0) -> torch.Generator:
        """A generator fixed by (seed, experience, salt), so a resumed run draws the same numbers.

        Salt 0 is the wake loop's shuffling; anything drawing its own numbers uses its own salt."""
        return seeded_generator(self.seed, experience_index, salt)

    def evaluate(self, experience: Any, batch_size: int = 512) -> Metrics:
        """Score the learner on an experience's test split; "accuracy" fills the accuracy matrix."""
        test = experience.test.with_format("torch")
        task_id = experience.task_id if self.info.scenario == "task" else None
        correct = 0
        with torch.no_grad():
            for start in range(0, len(test), batch_size):
                batch = test[start : start + batch_size]
                correct += int((self.predict(batch, task_id=task_id) == batch["y"]).sum())
        return {"accuracy": correct / max(len(test), 1)}
