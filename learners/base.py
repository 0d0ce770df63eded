"""The Learner interface every continual learner implements, and its sleep-stage plumbing.

A learner takes in a stream one experience at a time. `wake` is where it sees
the experience's data (once in the online setting; `epochs` passes otherwise;
test-time memory updates allowed). `sleep` is offline consolidation with no
access to past raw data except what the learner stores itself (a buffer counts
toward its memory budget). The loop calls, per experience:
wake(experience) -> sleep(context) -> evaluate(every experience).

Learners do not import the curricula room; they rely on these attributes of
what the loop hands them (see somna.curricula.base):
  experience.index, .train, .test (datasets.Dataset), .classes, .task_id, .metadata
  info.scenario, .num_experiences, .num_classes, .input_shape, .modality,
  .classes_per_experience
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch

from somna.platform.registry import SLEEP_STAGES

Metrics = dict[str, float]


@dataclass
class SleepConfig:
    """Which registered sleep stages run, in order, and their options (stage name -> dict)."""

    stages: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class LearnerConfig:
    """Fields every learner accepts; a learner's own Config subclasses this."""

    name: str = "finetune"
    sleep: SleepConfig = field(default_factory=SleepConfig)


@dataclass
class SleepContext:
    """What a sleep phase may use: the experience just woken on, never older raw data."""

    experience: Any
    num_experiences: int
    seed: int
    artifacts_dir: Path | None = None  # where stages may write readable artifacts (e.g. dreams.jsonl)

    @property
    def index(self) -> int:
        return self.experience.index


def stage_options(cls: type, stage: str, options: dict[str, Any]) -> Any:
    """Parse a stage's `learner.sleep.options[stage]` into its options dataclass; an unknown key is a one-line ValueError."""
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"learner.sleep.options.{stage}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    return cls(**options)


class SleepStage(Protocol):
    """A registered consolidation step: `@register_sleep_stage("name")` on a class with this shape.

    The class is constructed once per learner as `Stage(**options)`, where
    options come from `learner.sleep.options[name]`; each sleep calls it.
    """

    def __call__(self, learner: Learner, context: SleepContext) -> Metrics: ...


class Learner(abc.ABC):
    """Base class: subclass it, give it a `Config` dataclass, register it with `@register_learner`."""

    Config: ClassVar[type] = LearnerConfig

    def __init__(self, config: Any, info: Any, seed: int):
        self.config = config
        self.info = info
        self.seed = seed
        self.sleep_stages = build_sleep_stages(config.sleep)

    @abc.abstractmethod
    def wake(self, experience: Any) -> Metrics:
        """Take in one experience; return metrics to log (losses, sizes)."""

    def sleep(self, context: SleepContext) -> Metrics:
        """Run the configured sleep stages in order; each stage's metrics are prefixed by its name."""
        metrics: Metrics = {}
        for name, stage in self.sleep_stages.items():
            for key, value in stage(self, context).items():
                metrics[f"{name}/{key}"] = value
        return metrics

    @abc.abstractmethod
    def predict(self, batch: dict[str, torch.Tensor], task_id: int | None = None) -> torch.Tensor:
        """Predicted labels for a batch (columns as in the experience datasets)."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor needed to resume this learner exactly (saved with safetensors)."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `state_dict` returned."""

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


def build_sleep_stages(config: SleepConfig) -> dict[str, SleepStage]:
    """Instantiate the registered stages named in `config.stages` with their options."""
    options = dict(config.options or {})
    unknown_options = set(options) - set(config.stages)
    if unknown_options:
        raise ValueError(
            f"learner.sleep.options has options for stages not in learner.sleep.stages: "
            f"{', '.join(sorted(unknown_options))}"
        )
    return {name: SLEEP_STAGES.get(name)(**dict(options.get(name) or {})) for name in config.stages}
