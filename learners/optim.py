"""Optimizers by name, so a config picks one with a string (`learner.optimizer=sgd`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from somna.learners.optimizers import M3, DeepMomentum, DeltaMomentum, Muon

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter], float], torch.optim.Optimizer]

OPTIMIZERS: dict[str, OptimizerFactory] = {
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9),
    "muon": lambda params, lr: Muon(params, lr=lr),
    "drop-muon": lambda params, lr: Muon(params, lr=lr, drop=0.5),
    "m3": lambda params, lr: M3(params, lr=lr),
    "delta-momentum": lambda params, lr: DeltaMomentum(params, lr=lr),
    "deep-momentum": lambda params, lr: DeepMomentum(params, lr=lr),
}


def build_optimizer(name: str, params: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    try:
        factory = OPTIMIZERS[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(sorted(OPTIMIZERS))}") from None
    return factory(params, lr)
