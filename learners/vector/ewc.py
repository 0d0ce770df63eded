"""Online EWC (Schwarz et al. 2018, "Progress & Compress"), the penalty of Kirkpatrick et al. 2017 (eq. 3).

After experience i the diagonal Fisher F_i of the model on that experience's
inputs is folded into a running estimate, and the parameters become the anchor:
  F* <- gamma * F* + F_i,      theta* <- theta after experience i,
and every later step adds  (lambda / 2) * sum_k F*_k (theta_k - theta*_k)^2.
F_i is the exact expected Fisher: the mean over inputs x of
sum_c p(c|x) (d log p(c|x) / d theta)^2, the expectation over the model's own
predictions (no label sampling, so no extra randomness). In task-IL, p is the
softmax over the experience's own classes, as the model is trained there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from somna.learners.vector.classifier import ClassifierConfig, ClassifierLearner, require_option
from somna.platform.registry import register_learner


@dataclass
class EWCConfig(ClassifierConfig):
    name: str = "ewc"
    ewc_lambda: float = 1000.0  # strength of the quadratic penalty
    gamma: float = 1.0  # decay of the accumulated Fisher per experience (1: keep it all)


def expected_fisher(model: nn.Module, x: torch.Tensor, classes: list[int] | None) -> dict[str, torch.Tensor]:
    """Diagonal Fisher: mean_x sum_c p(c|x) (grad log p(c|x))^2, over `classes` only when given.

    Exact and cheap for networks whose parameters all sit in nn.Linear layers:
    a linear layer's per-example weight gradient is the outer product of the
    gradient at its output (delta) and its input (a), so its square is
    delta^2 (a^2)^T and the sum over examples is one matrix product. That needs
    one batched backward pass per class instead of one per (example, class).
    """
    linears = {name: module for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    covered = sum(p.numel() for module in linears.values() for p in module.parameters())
    if covered != sum(p.numel() for p in model.parameters()):
        raise ValueError("expected_fisher needs a model whose parameters all belong to nn.Linear layers")
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            inputs[name], outputs[name] = args[0].detach(), output

        return hook

    handles = [module.register_forward_hook(keep(name)) for name, module in linears.items()]
    try:
        logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    log_probs = (logits if classes is None else logits[:, classes]).log_softmax(dim=-1)
    probs = log_probs.detach().exp()
    fisher = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    for c in range(log_probs.shape[1]):
        # Examples are independent, so d(sum_n log p_c(x_n))/d output_n is example n's own delta.
        deltas = torch.autograd.grad(log_probs[:, c].sum(), [outputs[name] for name in linears], retain_graph=True)
        for (name, module), delta in zip(linears.items(), deltas):
            weighted = probs[:, c : c + 1] * delta.square()
            fisher[f"{name}.weight" if name else "weight"] += weighted.T @ inputs[name].square()
            if module.bias is not None:
                fisher[f"{name}.bias" if name else "bias"] += weighted.sum(dim=0)
    return {name: value / len(x) for name, value in fisher.items()}


@register_learner("ewc")
class EWCLearner(ClassifierLearner):
    """Online elastic weight consolidation: a decayed diagonal-Fisher penalty towards the last anchor."""

    Config = EWCConfig

    def __init__(self, config: Any, info: Any, seed: int):
        super().__init__(config, info, seed)
        require_option("ewc_lambda", config.ewc_lambda, config.ewc_lambda >= 0, ">= 0")
        require_option("gamma", config.gamma, 0 <= config.gamma <= 1, "in [0, 1]")
        self.fisher = {name: torch.zeros_like(p) for name, p in self.model.named_parameters()}
        self.anchor = {name: p.detach().clone() for name, p in self.model.named_parameters()}

    def extra_loss(self, x: torch.Tensor, y: torch.Tensor, task: torch.Tensor, logits: torch.Tensor) -> torch.Tensor | None:
        if self.experience_index == 0:
            return None  # nothing consolidated yet (the Fisher is zero)
        penalty = sum(
            (self.fisher[name] * (p - self.anchor[name]).square()).sum() for name, p in self.model.named_parameters()
        )
        return 0.5 * self.config.ewc_lambda * penalty

    def after_wake(self, x: torch.Tensor, y: torch.Tensor, task: torch.Tensor) -> None:
        classes = None
        if self.info.scenario == "task":
            classes = list(self.info.classes_per_experience[self.experience_index])
        new = expected_fisher(self.model, x, classes)
        for name, p in self.model.named_parameters():
            self.fisher[name] = self.config.gamma * self.fisher[name] + new[name]
            self.anchor[name] = p.detach().clone()

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = super().state_dict()
        state |= {f"ewc.fisher.{name}": value.clone() for name, value in self.fisher.items()}
        state |= {f"ewc.anchor.{name}": value.clone() for name, value in self.anchor.items()}
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        super().load_state_dict(state)
        self.fisher = {name: state[f"ewc.fisher.{name}"].clone() for name in self.fisher}
        self.anchor = {name: state[f"ewc.anchor.{name}"].clone() for name in self.anchor}
