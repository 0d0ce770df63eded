"""Optimizers by name (`learner.optimizer=sgd`), including the expressive ones of Nested Learning.

`OPTIMIZERS` is the one table a config picks from (`build_optimizer`). The
expressive optimizers treat optimizers as associative memories over gradients.

Momentum is a memory that compresses the gradient stream (PAPERS.md, "Optimizers
as memories"); these optimizers change that memory:

* `Muon`: momentum, then Newton–Schulz orthogonalisation of the step (the
  linear-memory special case of eq. 52). `drop > 0` is Drop-Muon: each step
  only a random, seeded subset of matrix layers is updated.
* `M3` (eq. 75): fast momentum every step, slow momentum every `slow_every`
  steps, both orthogonalised, divided by a second-moment normaliser.
* `DeltaMomentum` (eq. 48–49): the momentum forgets what it stored along the
  current gradient before writing it (delta rule instead of plain decay).
* `DeepMomentum` (eq. 50–52): the momentum is a small residual MLP trained
  online on the gradient stream; the step is σ(m(u)) with σ = Newton–Schulz.

Choices the paper leaves open (documented here, used everywhere below):
* Only parameters with >= 2 dims (weight matrices; conv kernels flattened to
  (out, -1)) get the expressive update. Biases and other vectors take a plain
  Adam step with the same learning rate: orthogonalising a vector only
  normalises it, and these parameters are a negligible share of the model.
* Orthogonalised steps are rescaled by 0.2·sqrt(max(rows, cols)), which gives
  them roughly the per-entry RMS of an Adam step, so every optimizer here
  shares Adam's learning rate (`learner.lr`) and they can be swapped by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from somna.kernels.newton_schulz import newton_schulz

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def orthogonal_step(update: Tensor, ns_steps: int) -> Tensor:
    """Newton–Schulz(update) reshaped to the parameter, scaled to an Adam-like RMS (see module doc)."""
    matrix = update.reshape(update.shape[0], -1)
    scale = 0.2 * math.sqrt(max(matrix.shape))
    return (newton_schulz(matrix, steps=ns_steps) * scale).reshape(update.shape)


def second_moment(state: dict[str, Any], grad: Tensor, beta2: float) -> Tensor:
    """Adam's bias-corrected running mean of squared gradients, kept in `state`."""
    if "v" not in state:
        state["v"] = torch.zeros_like(grad)
        state["v_steps"] = 0
    state["v"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    state["v_steps"] += 1
    return state["v"] / (1 - beta2 ** state["v_steps"])


class MatrixOptimizer(torch.optim.Optimizer):
    """Base: subclasses define `matrix_step` for weight matrices; vectors get Adam (module doc)."""

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]):
        if defaults["lr"] <= 0:
            raise ValueError(f"lr must be > 0, got {defaults['lr']}")
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            active = self.active_matrices(group)
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if param.ndim < 2:
                    self.adam_step(param, state, group["lr"])
                elif param in active:
                    self.matrix_step(param, param.grad, state, group)
        return loss

    def active_matrices(self, group: dict[str, Any]) -> set[Tensor]:
        """The matrix parameters updated this step (all of them, except under Drop-Muon)."""
        return {p for p in group["params"] if p.ndim >= 2 and p.grad is not None}

    def matrix_step(self, param: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        raise NotImplementedError

    @staticmethod
    def adam_step(param: Tensor, state: dict[str, Any], lr: float) -> None:
        beta1, beta2 = ADAM_BETAS
        grad = param.grad
        if "m" not in state:
            state["m"] = torch.zeros_like(grad)
        state["m"].mul_(beta1).add_(grad, alpha=1 - beta1)
        v_hat = second_moment(state, grad, beta2)
        m_hat = state["m"] / (1 - beta1 ** state["v_steps"])
        param.addcdiv_(m_hat, v_hat.sqrt().add_(ADAM_EPS), value=-lr)


class Muon(MatrixOptimizer):
    """Momentum + Newton–Schulz orthogonalised steps; `drop` = fraction of matrix layers skipped per step (Drop-Muon).

    Drop-Muon draws the skipped layers from a generator seeded by `seed`, so a
    run is reproducible; at least one layer is always updated. A skipped
    layer's momentum is left untouched (its gradient need not be computed).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        drop: float = 0.0,
        seed: int = 0,
    ):
        if not 0.0 <= drop < 1.0:
            raise ValueError(f"drop must be in [0, 1), got {drop}")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps, drop=drop))
        self.generator = torch.Generator().manual_seed(seed)

    def active_matrices(self, group: dict[str, Any]) -> set[Tensor]:
        matrices = [p for p in group["params"] if p.ndim >= 2 and p.grad is not None]
        if group["drop"] == 0.0 or not matrices:
            return set(matrices)
        keep = torch.rand(len(matrices), generator=self.generator) >= group["drop"]
        if not keep.any():
            keep[torch.randint(len(matrices), (1,), generator=self.generator)] = True
        return {p for p, k in zip(matrices, keep.tolist()) if k}

    def matrix_step(self, param: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        if "momentum" not in state:
            state["momentum"] = torch.zeros_like(grad)
        buffer = state["momentum"].mul_(group["momentum"]).add_(grad)
        update = grad.add(buffer, alpha=group["momentum"]) if group["nesterov"] else buffer
        param.add_(orthogonal_step(update, group["ns_steps"]), alpha=-group["lr"])


class M3(MatrixOptimizer):
    """Multi-scale momentum (Nested Learning eq. 75): fast + slow orthogonalised momenta over a second-moment normaliser.

    M1 ← β1·M1 + g every step; every `slow_every` (Ĉ) steps M2 ← β3·M2 + Σ g over
    those steps; V ← Adam second moment of g. Step: (NS(M1) + a·NS(M2)) / n(V)
    where n(V) = sqrt(V̂) divided by its mean, so the normaliser reshapes the
    step per entry without changing its overall scale (the paper leaves the
    scale to η), floored at `min_normaliser`: unlike Adam's numerator, an
    orthogonalised step is not proportional to g, so dividing it by the
    near-zero sqrt(V̂) of a rarely-active input (a blank pixel) would blow
    that entry up. The paper writes plain sums (β's = 1 with a step size in
    front); the decays here keep the memories bounded over long runs.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        beta3: float = 0.5,
        slow_weight: float = 0.5,
        slow_every: int = 10,
        ns_steps: int = 5,
        min_normaliser: float = 0.1,
        eps: float = 1e-8,
    ):
        if slow_every < 1:
            raise ValueError(f"slow_every must be >= 1, got {slow_every}")
        super().__init__(
            params,
            dict(lr=lr, beta1=beta1, beta2=beta2, beta3=beta3, slow_weight=slow_weight,
                 slow_every=slow_every, ns_steps=ns_steps, min_normaliser=min_normaliser, eps=eps),
        )

    def matrix_step(self, param: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        if "fast" not in state:
            state["fast"] = torch.zeros_like(grad)
            state["slow"] = torch.zeros_like(grad)
            state["chunk_sum"] = torch.zeros_like(grad)
            state["slow_step"] = torch.zeros_like(grad)
        fast = state["fast"].mul_(group["beta1"]).add_(grad)
        state["chunk_sum"].add_(grad)
        v_hat = second_moment(state, grad, group["beta2"])
        if state["v_steps"] % group["slow_every"] == 0:
            state["slow"].mul_(group["beta3"]).add_(state["chunk_sum"])
            state["chunk_sum"].zero_()
            state["slow_step"] = orthogonal_step(state["slow"], group["ns_steps"])
        update = orthogonal_step(fast, group["ns_steps"]) + group["slow_weight"] * state["slow_step"]
        root = v_hat.sqrt()
        normaliser = (root / (root.mean() + group["eps"])).clamp_(min=group["min_normaliser"])
        param.addcdiv_(update, normaliser, value=-group["lr"])


class DeltaMomentum(MatrixOptimizer):
    """Delta-rule momentum (Nested Learning eq. 48–49): m ← m(α I − β ĝᵀĝ) + (1 − α) P g, W ← W − η m.

    ĝ = g / ‖g‖ makes the forgetting term a projection (so any β in [0, 1]
    is stable): before writing the new gradient the memory erases what it
    stored along the gradient's row space. P is Adam's diagonal preconditioner
    1/sqrt(V̂); with β = 0 this is plain momentum on Adam-preconditioned gradients.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        alpha: float = 0.9,
        beta: float = 0.5,
        beta2: float = 0.999,
        eps: float = 1e-8,
    ):
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        super().__init__(params, dict(lr=lr, alpha=alpha, beta=beta, beta2=beta2, eps=eps))

    def matrix_step(self, param: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        g = grad.reshape(grad.shape[0], -1)
        if "delta_m" not in state:
            state["delta_m"] = torch.zeros_like(g)
        m = state["delta_m"]
        g_unit = g / (g.norm() + group["eps"])
        erased = (m @ g_unit.mT) @ g_unit
        preconditioned = g / second_moment(state, g, group["beta2"]).sqrt().add_(group["eps"])
        m.mul_(group["alpha"]).sub_(erased, alpha=group["beta"]).add_(preconditioned, alpha=1 - group["alpha"])
        param.add_(m.reshape(param.shape), alpha=-group["lr"])


class DeepMomentum(MatrixOptimizer):
    """Deep momentum (Nested Learning eq. 50–52): the momentum is an MLP memory trained online on gradients.

    Per weight matrix, the memory m_φ(k) = k + tanh(k A) B acts on gradient rows
    (k ∈ R^cols). It is an associative memory over the gradient stream: key =
    the previous gradient, value = the gradient that followed, so it learns
    to predict where the gradient is heading — the job linear momentum does
    by averaging. Each step: one gradient step on L2 = ½ mean‖m_φ(u_{t-1}) − u_t‖²
    with retention (φ ← α φ − η_m ∇L2, eq. 51), then W ← W − η σ(m_φ(u_t)) with
    σ = Newton–Schulz (eq. 52). B starts at zero, so the first steps are
    orthogonalised gradient descent; linear m with plain averaging is Muon.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        memory_hidden: int = 16,
        memory_lr: float = 0.1,
        retention: float = 0.99,
        ns_steps: int = 5,
        seed: int = 0,
    ):
        if memory_hidden < 1:
            raise ValueError(f"memory_hidden must be >= 1, got {memory_hidden}")
        super().__init__(
            params, dict(lr=lr, memory_hidden=memory_hidden, memory_lr=memory_lr, retention=retention, ns_steps=ns_steps)
        )
        self.generator = torch.Generator().manual_seed(seed)

    @staticmethod
    def recall(keys: Tensor, a: Tensor, b: Tensor) -> Tensor:
        return keys + torch.tanh(keys @ a) @ b

    def matrix_step(self, param: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        u = grad.reshape(grad.shape[0], -1)
        if "memory_a" not in state:
            cols = u.shape[1]
            state["memory_a"] = torch.randn(cols, group["memory_hidden"], generator=self.generator) / math.sqrt(cols)
            state["memory_b"] = torch.zeros(group["memory_hidden"], cols)
        else:
            self.train_memory(state, u, group)
        state["previous_grad"] = u.clone()
        prediction = self.recall(u, state["memory_a"], state["memory_b"])
        param.add_(orthogonal_step(prediction, group["ns_steps"]).reshape(param.shape), alpha=-group["lr"])

    def train_memory(self, state: dict[str, Any], target: Tensor, group: dict[str, Any]) -> None:
        """One retention + gradient step of the memory on (previous gradient -> current gradient).

        The L2 loss's gradients are written out (two small matmuls) instead of
        running autograd inside every optimizer step.
        """
        scale = target.norm(dim=1, keepdim=True).mean() + 1e-12  # compare directions, not magnitudes
        keys, values = state["previous_grad"] / scale, target / scale
        a, b = state["memory_a"], state["memory_b"]
        hidden = torch.tanh(keys @ a)
        residual = (keys + hidden @ b - values) / len(keys)  # d loss / d output
        grad_b = hidden.mT @ residual
        grad_a = keys.mT @ ((residual @ b.mT) * (1 - hidden.pow(2)))
        a.mul_(group["retention"]).sub_(grad_a, alpha=group["memory_lr"])
        b.mul_(group["retention"]).sub_(grad_b, alpha=group["memory_lr"])


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


def optimizer_state_tensors(optimizer: torch.optim.Optimizer, prefix: str) -> dict[str, Tensor]:
    """Everything `optimizer` carries from one step to the next, as flat tensors for a safetensors state dict.

    Per-parameter state is keyed by the parameter's position (`{prefix}param.{i}.{name}`); Python
    numbers (step counters) go to `{prefix}number.{i}.{name}` as 0-dim int64/float64 tensors, so that
    loading gives back a Python number and the same floats; an optimizer's seeded `generator`
    (Drop-Muon, deep momentum) is kept as its state. The hyperparameters are not stored: they come
    from the config the optimizer is rebuilt with.
    """
    state: dict[str, Tensor] = {}
    for index, param in enumerate(p for group in optimizer.param_groups for p in group["params"]):
        for name, value in optimizer.state.get(param, {}).items():
            if isinstance(value, Tensor):
                state[f"{prefix}param.{index}.{name}"] = value.clone()
            else:
                state[f"{prefix}number.{index}.{name}"] = torch.tensor(value, dtype=torch.float64 if isinstance(value, float) else torch.int64)
    generator = getattr(optimizer, "generator", None)
    if generator is not None:
        state[f"{prefix}generator"] = generator.get_state()
    return state


def load_optimizer_state_tensors(optimizer: torch.optim.Optimizer, state: dict[str, Tensor], prefix: str) -> None:
    """Restore what `optimizer_state_tensors` returned into an optimizer built over the same parameters."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        kind, _, rest = key.removeprefix(prefix).partition(".")
        if kind == "generator":
            optimizer.generator.set_state(value.clone())
            continue
        index, name = rest.split(".", 1)
        optimizer.state[params[int(index)]][name] = value.clone() if kind == "param" else value.item()
