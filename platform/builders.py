"""Turning a resolved config into live objects: the curriculum, the learner, seeded RNGs."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from somna.platform.catalog import load_builtins
from somna.platform.registry import CURRICULA, LEARNERS


def build_curriculum(cfg: DictConfig) -> Any:
    load_builtins()
    return CURRICULA.get(cfg.curriculum.name)(cfg.curriculum, scenario=cfg.scenario, seed=int(cfg.seed))


def build_learner(cfg: DictConfig, info: Any) -> Any:
    load_builtins()
    cls = LEARNERS.resolve(cfg.learner.name, info.modality)
    return cls(cfg.learner, info, int(cfg.seed))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
