"""Continual-learning streams over scikit-learn's bundled 8x8 digits (no download).

* split-digits: 5 experiences of 2 classes each (class- or task-incremental).
* permuted-digits: every experience is all 10 classes under a fixed random
  pixel permutation (domain-incremental).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from somna.curricula.base import Curriculum, CurriculumConfig, Experience, StreamInfo, vector_dataset
from somna.platform.registry import register_curriculum

NUM_CLASSES = 10
NUM_PIXELS = 64


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    bunch = load_digits()
    return (bunch.data / 16.0).astype(np.float32), bunch.target.astype(np.int64)


def digits_split(seed: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stratified train/test split of all digits, fixed by `seed`."""
    x, y = _digits()
    return train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)


@dataclass
class SplitDigitsConfig(CurriculumConfig):
    name: str = "split-digits"
    num_experiences: int = 5
    test_fraction: float = 0.3
    shuffle_classes: bool = False  # True: the class order is a permutation drawn from the seed


@register_curriculum("split-digits")
class SplitDigits(Curriculum):
    """Digits 0-9 in experiences of disjoint classes (class-IL by default, task-IL with task ids)."""

    Config = SplitDigitsConfig
    scenarios = ("class", "task")

    def build(self) -> list[Experience]:
        if NUM_CLASSES % self.config.num_experiences:
            raise ValueError(
                f"curriculum.num_experiences must divide {NUM_CLASSES} for split-digits, "
                f"got {self.config.num_experiences}"
            )
        x_train, x_test, y_train, y_test = digits_split(self.seed, self.config.test_fraction)
        order = np.arange(NUM_CLASSES)
        if self.config.shuffle_classes:
            order = np.random.default_rng(self.seed).permutation(NUM_CLASSES)
        groups = order.reshape(self.config.num_experiences, -1)
        experiences = []
        for index, classes in enumerate(groups):
            train_mask, test_mask = np.isin(y_train, classes), np.isin(y_test, classes)
            experiences.append(
                Experience(
                    index=index,
                    train=vector_dataset(x_train[train_mask], y_train[train_mask], index),
                    test=vector_dataset(x_test[test_mask], y_test[test_mask], index),
                    classes=tuple(int(c) for c in classes),
                    task_id=index if self.scenario == "task" else None,
                )
            )
        return experiences

    @property
    def info(self) -> StreamInfo:
        return StreamInfo(
            name="split-digits",
            scenario=self.scenario,
            num_experiences=len(self.experiences),
            num_classes=NUM_CLASSES,
            input_shape=(NUM_PIXELS,),
            classes_per_experience=tuple(e.classes for e in self.experiences),
        )


@dataclass
class PermutedDigitsConfig(CurriculumConfig):
    name: str = "permuted-digits"
    num_experiences: int = 5
    test_fraction: float = 0.3
    identity_first: bool = True  # the first experience sees unpermuted digits


@register_curriculum("permuted-digits")
class PermutedDigits(Curriculum):
    """All ten digits under a new fixed pixel permutation per experience (domain-IL)."""

    Config = PermutedDigitsConfig
    scenarios = ("domain",)
    default_scenario = "domain"

    def build(self) -> list[Experience]:
        x_train, x_test, y_train, y_test = digits_split(self.seed, self.config.test_fraction)
        rng = np.random.default_rng(self.seed)
        experiences = []
        for index in range(self.config.num_experiences):
            identity = index == 0 and self.config.identity_first
            permutation = np.arange(NUM_PIXELS) if identity else rng.permutation(NUM_PIXELS)
            experiences.append(
                Experience(
                    index=index,
                    train=vector_dataset(x_train[:, permutation], y_train, index),
                    test=vector_dataset(x_test[:, permutation], y_test, index),
                    classes=tuple(range(NUM_CLASSES)),
                    metadata={"permutation": permutation.tolist()},
                )
            )
        return experiences

    @property
    def info(self) -> StreamInfo:
        return StreamInfo(
            name="permuted-digits",
            scenario=self.scenario,
            num_experiences=len(self.experiences),
            num_classes=NUM_CLASSES,
            input_shape=(NUM_PIXELS,),
            classes_per_experience=tuple(e.classes for e in self.experiences),
        )
