"""Expressive optimizers: each converges on least squares and on a digits experience; Muon's step is orthogonal.

Tests marked `learned` note their measured values (seed 0); they were the same under
ATEN_CPU_CAPABILITY=default, avx2 and avx512.
"""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load, save

from somna.curricula.digits import SplitDigits
from somna.learners.vector.classifier import ClassifierConfig, ClassifierLearner
from somna.learners.shared.optimizers import OPTIMIZERS, build_optimizer, load_optimizer_state_tensors, optimizer_state_tensors
from somna.learners.shared.optimizers import M3, DeepMomentum, DeltaMomentum, Muon, orthogonal_step

EXPRESSIVE = ["muon", "drop-muon", "m3", "delta-momentum", "deep-momentum"]


def least_squares_losses(name: str, steps: int = 150, lr: float = 0.05) -> tuple[float, float]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 20, generator=generator)
    y = x @ torch.randn(5, 20, generator=generator).T
    model = torch.nn.Linear(20, 5)
    torch.nn.init.zeros_(model.weight)
    optimizer = build_optimizer(name, model.parameters(), lr)
    losses = []
    for _ in range(steps):
        loss = (model(x) - y).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses[0], losses[-1]


@pytest.mark.learned
@pytest.mark.parametrize("name", EXPRESSIVE)
def test_converges_on_least_squares(name):
    first, last = least_squares_losses(name)
    assert last < 0.1 * first  # measured last/first: muon, drop-muon 0.007, m3 0.084, delta-momentum 0.039, deep-momentum 0.001


@pytest.mark.learned
@pytest.mark.parametrize("name", EXPRESSIVE)
def test_one_experience_digits_finetune_is_accurate(name):
    stream = SplitDigits(OmegaConf.structured(SplitDigits.Config()), scenario="class", seed=0)
    config = OmegaConf.structured(ClassifierConfig(hidden=[32], epochs=3, lr=1e-2, optimizer=name))
    learner = ClassifierLearner(config, stream.info, seed=0)
    learner.wake(stream[0])
    assert learner.evaluate(stream[0])["accuracy"] > 0.9  # measured muon 0.991, drop-muon 0.972, m3 1.000, delta 0.991, deep 0.982


def test_registered_by_name():
    assert set(EXPRESSIVE) <= set(OPTIMIZERS)
    with pytest.raises(ValueError, match="unknown optimizer 'nope'; choose one of"):
        build_optimizer("nope", [torch.nn.Parameter(torch.zeros(2))], 1e-3)


def test_muon_step_is_near_orthogonal():
    weight = torch.nn.Parameter(torch.zeros(32, 48))
    weight.grad = torch.randn(32, 48, generator=torch.Generator().manual_seed(1))
    Muon([weight], lr=1.0, momentum=0.0).step()
    step = -weight.detach() / (0.2 * 48**0.5)  # undo the documented RMS scale
    singular_values = torch.linalg.svdvals(step)
    assert singular_values.min() > 0.6 and singular_values.max() < 1.25
    gram = step @ step.T
    assert torch.allclose(gram / gram.diagonal().mean(), torch.eye(32), atol=0.35)


def test_drop_muon_updates_a_seeded_subset_of_layers():
    def changed_layers(seed: int) -> list[list[bool]]:
        layers = [torch.nn.Parameter(torch.zeros(4, 4)) for _ in range(6)]
        optimizer = Muon(layers, lr=0.1, drop=0.5, seed=seed)
        history = []
        for _ in range(5):
            before = [p.detach().clone() for p in layers]
            for p in layers:
                p.grad = torch.ones(4, 4)
            optimizer.step()
            history.append([not torch.equal(b, p) for b, p in zip(before, layers)])
        return history

    history = changed_layers(seed=0)
    assert all(1 <= sum(step) < 6 for step in history)
    assert history == changed_layers(seed=0)
    assert history != changed_layers(seed=1)


def test_vectors_take_the_adam_step():
    """Biases fall back to Adam: the same numbers as torch.optim.Adam (documented choice)."""
    for cls in (Muon, M3, DeltaMomentum, DeepMomentum):
        ours, reference = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
        optimizers = cls([ours], lr=0.1), torch.optim.Adam([reference], lr=0.1)
        for step in range(3):
            for p, optimizer in zip((ours, reference), optimizers):
                p.grad = torch.tensor([1.0, -2.0, 0.5]) * (step + 1)
                optimizer.step()
        assert torch.allclose(ours, reference, atol=1e-6)


def test_delta_momentum_with_beta_zero_is_preconditioned_momentum():
    """β = 0 removes the delta (erase) term: m ← α m + (1 − α) g / sqrt(V̂) (eq. 48 with plain decay)."""
    weight = torch.nn.Parameter(torch.zeros(2, 2))
    optimizer = DeltaMomentum([weight], lr=1.0, alpha=0.5, beta=0.0, beta2=0.0, eps=0.0)
    weight.grad = torch.tensor([[2.0, -1.0], [0.5, 4.0]])
    optimizer.step()  # V̂ = g², so P g = sign(g); m = 0.5 sign(g)
    assert torch.allclose(weight.detach(), -0.5 * weight.grad.sign())


def test_delta_momentum_erases_along_the_gradient():
    """With α = 1, β = 1 the stored momentum loses exactly its component along the (unit) gradient's rows."""
    weight = torch.nn.Parameter(torch.zeros(1, 2))
    optimizer = DeltaMomentum([weight], lr=1.0, alpha=1.0, beta=1.0, beta2=0.0, eps=0.0)
    optimizer.state[weight]["delta_m"] = torch.tensor([[1.0, 1.0]])
    weight.grad = torch.tensor([[3.0, 4.0]])
    optimizer.step()  # ĝ = [0.6, 0.8]; m(I − ĝᵀĝ) = [1, 1] − 1.4·[0.6, 0.8]; the write term has weight 1 − α = 0
    assert torch.allclose(weight.detach(), -torch.tensor([[0.16, -0.12]]), atol=1e-6)


def test_m3_slow_momentum_changes_only_every_c_steps():
    weight = torch.nn.Parameter(torch.zeros(3, 3))
    optimizer = M3([weight], lr=0.1, slow_every=3)
    slow_snapshots = []
    for step in range(6):
        weight.grad = torch.randn(3, 3, generator=torch.Generator().manual_seed(step))
        optimizer.step()
        slow_snapshots.append(optimizer.state[weight]["slow"].clone())
    assert torch.equal(slow_snapshots[0], torch.zeros(3, 3)) and torch.equal(slow_snapshots[1], torch.zeros(3, 3))
    assert not torch.equal(slow_snapshots[2], torch.zeros(3, 3))
    assert torch.equal(slow_snapshots[2], slow_snapshots[4]) and not torch.equal(slow_snapshots[4], slow_snapshots[5])


def test_deep_momentum_memory_gradients_match_autograd():
    generator = torch.Generator().manual_seed(0)
    keys, values = torch.randn(5, 6, generator=generator), torch.randn(5, 6, generator=generator)
    a, b = torch.randn(6, 3, generator=generator), torch.randn(3, 6, generator=generator)
    state = {"previous_grad": keys, "memory_a": a.clone(), "memory_b": b.clone()}
    scale = values.norm(dim=1).mean()
    DeepMomentum([torch.nn.Parameter(torch.zeros(1, 1))], memory_lr=1.0, retention=1.0).train_memory(
        state, values, {"retention": 1.0, "memory_lr": 1.0}
    )
    a_, b_ = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    loss = 0.5 * (DeepMomentum.recall(keys / scale, a_, b_) - values / scale).pow(2).sum(dim=1).mean()
    grad_a, grad_b = torch.autograd.grad(loss, (a_, b_))
    assert torch.allclose(state["memory_a"], a - grad_a, atol=1e-5)
    assert torch.allclose(state["memory_b"], b - grad_b, atol=1e-5)


@pytest.mark.learned
def test_deep_momentum_memory_learns_the_gradient_stream():
    """Gradients alternating g1, g2, g1, ...: the memory learns to predict the next one from the current one."""
    weight = torch.nn.Parameter(torch.zeros(4, 8))
    optimizer = DeepMomentum([weight], lr=1e-3, memory_lr=0.5, retention=1.0)
    gradients = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(0))
    errors = []
    for step in range(100):
        weight.grad = gradients[step % 2].clone()
        optimizer.step()
        state, scale = optimizer.state[weight], gradients[step % 2].norm(dim=1).mean()
        prediction = DeepMomentum.recall(gradients[step % 2] / scale, state["memory_a"], state["memory_b"])
        errors.append(float((prediction - gradients[(step + 1) % 2] / scale).norm()))
    assert errors[-1] < 0.05 * errors[0]  # measured 0.023


def test_orthogonal_step_rms_is_adam_like():
    step = orthogonal_step(torch.randn(64, 128, generator=torch.Generator().manual_seed(0)), ns_steps=5)
    assert 0.1 < float(step.pow(2).mean().sqrt()) < 0.3


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_tensors_restore_an_optimizer_exactly(name):
    """Save after 3 steps (safetensors bytes), rebuild, load: the next 3 steps are bit-identical to never stopping."""
    def model_and_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        return model, build_optimizer(name, model.parameters(), 1e-2)

    def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> None:
        x = torch.randn(5, 6, generator=torch.Generator().manual_seed(seed))
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()

    straight, straight_optimizer = model_and_optimizer()
    for seed in range(3):
        step(straight, straight_optimizer, seed)
    saved = load(save(optimizer_state_tensors(straight_optimizer, "opt.")))
    resumed, resumed_optimizer = model_and_optimizer()
    resumed.load_state_dict(straight.state_dict())
    load_optimizer_state_tensors(resumed_optimizer, saved, "opt.")
    for seed in range(3, 6):
        step(straight, straight_optimizer, seed)
        step(resumed, resumed_optimizer, seed)
    for expected, actual in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(expected, actual)
