"""Turning a resolved config into live objects: the curriculum, the learner, seeded RNGs."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from somna.platform.catalog import load_builtins
from somna.platform.registry import CURRICULA, LEARNERS


def build_curriculum(cfg: DictConfig) -> Any:
    load_builtins()
    return CURRICULA.get(cfg.curriculum.name)(cfg.curriculum, scenario=cfg.scenario, seed=int(cfg.seed))


def build_learner(cfg: DictConfig, info: Any) -> Any:
    """The learner of `cfg`; a text learner's `model.base` naming a pretrain preset is pretrained once and cached first."""
    load_builtins()
    cls = LEARNERS.resolve(cfg.learner.name, info.modality)
    learner = cfg.learner
    if OmegaConf.select(learner, "model.base", default=None) is not None:
        from somna.platform.pretraining import resolve_base

        learner = resolve_base(learner)
    return cls(learner, info, int(cfg.seed))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
