"""What a curriculum is: an ordered list of experiences plus facts about the stream.

Learners never import this module (rooms import one way); they rely on the
attribute names documented on `Experience` and `StreamInfo` instead.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import datasets

SCENARIOS = ("class", "task", "domain")


@dataclass
class CurriculumConfig:
    """Fields every curriculum accepts; subclasses add their own."""

    name: str = "split-digits"  # a registered curriculum (`somna curricula`)
    num_experiences: int = 5  # experiences in the stream


@dataclass(frozen=True)
class StreamInfo:
    """What a learner may know about the stream before seeing it."""

    name: str
    scenario: str  # "class" | "task" | "domain"
    num_experiences: int
    num_classes: int  # size of the label space the learner must cover (0 for pure LM streams)
    input_shape: tuple[int, ...]  # shape of one "x" (empty for text)
    modality: str = "vector"  # "vector" | "text"
    classes_per_experience: tuple[tuple[int, ...], ...] = ()


@dataclass
class Experience:
    """One step of the stream: its train and test splits and what is known about it.

    Vector curricula use columns `x` (list of floats), `y` (int label) and
    `task` (int experience id); text curricula document their own columns.
    `task_id` is given to the learner only in the task-incremental scenario.
    `dev` is what a learner may use for rewards, selection or tuning (a dreaming stage's
    reward questions); it never holds a test probe, and nothing but the evaluation reads `test`.
    """

    index: int
    train: datasets.Dataset
    test: datasets.Dataset
    classes: tuple[int, ...] = ()
    task_id: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    dev: datasets.Dataset | None = None


def vector_dataset(x: Any, y: Any, task: int) -> datasets.Dataset:
    """A vector curriculum's split: columns `x` (float32 features), `y` (int label), `task` (the experience id)."""
    return datasets.Dataset.from_dict(
        {"x": [list(map(float, row)) for row in x], "y": [int(label) for label in y], "task": [task] * len(y)},
        features=datasets.Features(
            {
                "x": datasets.Sequence(datasets.Value("float32")),
                "y": datasets.Value("int64"),
                "task": datasets.Value("int64"),
            }
        ),
    )


class Curriculum(abc.ABC):
    """An iterable of experiences, built deterministically from (config, scenario, seed)."""

    Config: ClassVar[type] = CurriculumConfig
    modality: ClassVar[str] = "vector"  # picks the learner implementation ("vector" | "text")
    scenarios: ClassVar[tuple[str, ...]] = SCENARIOS
    default_scenario: ClassVar[str] = "class"

    def __init__(self, config: Any, *, scenario: str, seed: int):
        if scenario not in self.scenarios:
            raise ValueError(
                f"curriculum {config.name!r} does not support scenario {scenario!r}; "
                f"choose one of: {', '.join(self.scenarios)}"
            )
        if config.num_experiences < 1:
            raise ValueError(f"curriculum.num_experiences must be >= 1, got {config.num_experiences}")
        self.config = config
        self.scenario = scenario
        self.seed = seed
        self.experiences: list[Experience] = self.build()

    @abc.abstractmethod
    def build(self) -> list[Experience]:
        """Create every experience; must depend only on config, scenario and seed."""

    @property
    @abc.abstractmethod
    def info(self) -> StreamInfo:
        """Facts about the stream a learner may use to size itself."""

    def __iter__(self) -> Iterator[Experience]:
        return iter(self.experiences)

    def __len__(self) -> int:
        return len(self.experiences)

    def __getitem__(self, index: int) -> Experience:
        return self.experiences[index]
