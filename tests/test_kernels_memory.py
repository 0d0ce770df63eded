"""Tests for somna.kernels memory modules: Newton–Schulz, NeuralMemory (Titans), Miras, ATLAS."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from somna.kernels.delta_rule import delta_rule
from somna.kernels.atlas import Atlas, PolynomialFeatures
from somna.kernels.memory_scan import Gates, MemoryRule, MemoryState, memory_scan
from somna.kernels.neural_memory import NeuralMemory
from somna.kernels.newton_schulz import newton_schulz
from somna.platform.registry import KERNELS


@pytest.mark.parametrize("shape", [(32, 64), (64, 32), (3, 16, 48), (2, 40, 24)])
def test_newton_schulz_singular_values_near_one_and_keeps_singular_vectors(shape):
    torch.manual_seed(0)
    G = torch.randn(*shape)
    X = newton_schulz(G, steps=5)
    assert X.shape == G.shape and X.dtype == torch.float32
    s = torch.linalg.svdvals(X)
    assert s.min() > 0.6 and s.max() < 1.25  # the Muon coefficients land in a band around 1
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    polar = U @ Vh
    cosine = (X * polar).sum((-2, -1)) / (X.norm(dim=(-2, -1)) * polar.norm(dim=(-2, -1)))
    assert cosine.min() > 0.97


def test_newton_schulz_rejects_vectors():
    with pytest.raises(ValueError, match="at least 2 dims"):
        newton_schulz(torch.randn(5))


# ---------------------------------------------------------------- neural memory (Titans, Miras, ATLAS)

B, H = 2, 3
F64 = torch.float64


def randn(*shape, generator):
    return torch.randn(*shape, generator=generator, dtype=F64)


def test_module_linear_titans_equals_delta_rule():
    """Depth 1, no momentum, no forgetting, constant θ, chunk 1: Titans is the delta rule with β = θ."""
    torch.manual_seed(0)
    layer = NeuralMemory(24, 3, depth=1, chunk_size=1, momentum=False, forget=False, lr=0.6, max_grad_norm=None).double()
    x = torch.randn(2, 11, 24, dtype=F64)
    y, _ = layer(x)
    q = F.normalize(layer.split_heads(layer.q_proj(x)), dim=-1)
    k = F.normalize(layer.split_heads(layer.k_proj(x)), dim=-1)
    v = layer.split_heads(layer.v_proj(x))
    beta = torch.full(q.shape[:3], 0.6, dtype=F64)
    start = layer.initial_weights[0].unsqueeze(0).expand(2, -1, -1, -1)  # (B, H, d_k, d_v): o = q S
    o, _ = delta_rule(q, k, v, beta, initial_state=start)
    torch.testing.assert_close(y, layer.out_proj(o.transpose(1, 2).flatten(2)), rtol=1e-10, atol=1e-10)


def test_scan_linear_equals_delta_rule_with_token_dependent_beta():
    g = torch.Generator().manual_seed(1)
    T, d = 13, 8
    q, v = randn(B, H, T, d, generator=g), randn(B, H, T, d, generator=g)
    k = F.normalize(randn(B, H, T, d, generator=g), dim=-1)
    beta, start = torch.rand(B, H, T, generator=g, dtype=F64), randn(B, H, d, d, generator=g)
    state = MemoryState.start((start,), momentum=False)
    y, final = memory_scan(q, k, v, Gates(beta), state, MemoryRule(chunk_size=1))
    o, expected_final = delta_rule(q, k, v, beta, initial_state=start)
    torch.testing.assert_close(y, o, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(final.weights[0], expected_final, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("chunk", [1, 8])
def test_inner_loop_memorises_repeated_pairs(chunk):
    """Real behaviour: streaming 8 key-value pairs 6 times drives the memory's associative loss on them down 5×."""
    g = torch.Generator().manual_seed(9)
    d, pairs = 8, 8
    keys = F.normalize(randn(1, 1, pairs, d, generator=g), dim=-1)
    values = randn(1, 1, pairs, d, generator=g)
    k, v = keys.repeat(1, 1, 6, 1), values.repeat(1, 1, 6, 1)
    weights = (randn(1, 1, d, 32, generator=g) / math.sqrt(d), randn(1, 1, 32, d, generator=g) / math.sqrt(32))
    state = MemoryState.start(weights, momentum=False)
    _, final = memory_scan(k, k, v, Gates(torch.full(k.shape[:3], 0.2, dtype=F64)), state, MemoryRule(chunk_size=chunk))

    def loss(ws):
        return 0.5 * (F.silu(keys @ ws[0]) @ ws[1] - values).pow(2).sum()

    assert loss(final.weights) < 0.2 * loss(weights)


MEMORY_KERNELS = {
    "titans": {},
    "moneta": {},
    "yaad": {"delta": 0.8},  # residuals here straddle 0.8: both Huber branches run, so δ and v get gradients
    "memora": {},
    "atlas": {},
    "atlas-muon-poly": {"muon": True, "degree": 2},
}


@pytest.mark.parametrize("case", MEMORY_KERNELS)
def test_one_call_equals_pieces_and_backward_reaches_every_parameter(case):
    torch.manual_seed(3)
    layer = KERNELS.get(case.split("-")[0])(16, 2, chunk_size=4, **MEMORY_KERNELS[case]).double()
    x = torch.randn(2, 19, 16, dtype=F64)
    whole, _ = layer(x)
    state, pieces = None, []
    for a, b in [(0, 3), (3, 4), (4, 11), (11, 19)]:  # splits that ignore chunk boundaries
        y, state = layer(x[:, a:b], state)
        pieces.append(y)
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole, rtol=1e-10, atol=1e-10)
    whole.pow(2).mean().backward()
    missing = [n for n, p in layer.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_memory_updates_when_sequence_is_shorter_than_a_chunk():
    torch.manual_seed(4)
    layer = NeuralMemory(16, 2, chunk_size=64).double()
    x = torch.randn(1, 5, 16, dtype=F64)
    y, state = layer(x)
    frozen = layer.retrieve(x)  # the initial memory, never written
    torch.testing.assert_close(y[:, 0] * 0, (y - frozen)[:, 0] * 0)  # shapes agree
    assert (y - frozen).abs().amax(-1).min() > 1e-6  # every token already reads a written memory
    current = layer.current_memory(state)
    assert all((w - w0).abs().max() > 1e-6 for w, w0 in zip(current.weights, layer.initial_state(1).memory.weights))
    # and the next call continues from the written memory
    later, _ = layer(x, state)
    fresh, _ = layer(x)
    assert (later - fresh).abs().max() > 1e-6


def test_max_grad_norm_clips_each_tokens_inner_gradient():
    g = torch.Generator().manual_seed(10)
    T, d = 5, 4
    k = F.normalize(randn(1, 1, T, d, generator=g), dim=-1)
    v = 100 * randn(1, 1, T, d, generator=g)  # huge errors: every gradient gets clipped
    start = randn(1, 1, d, d, generator=g)
    state = MemoryState.start((start,), momentum=False)
    gates = Gates(torch.ones(1, 1, T, dtype=F64))
    _, clipped = memory_scan(k[:, :, :1], k[:, :, :1], v[:, :, :1], Gates(gates.lr[:, :, :1]), state, MemoryRule(chunk_size=1, max_grad_norm=0.5))
    step = clipped.weights[0] - start
    unclipped = k[0, 0, 0][:, None] * (k[0, 0, 0] @ start[0, 0] - v[0, 0, 0])[None, :]
    torch.testing.assert_close(step.norm(), torch.tensor(0.5, dtype=F64))  # norm capped ...
    torch.testing.assert_close(step[0, 0] / step.norm(), -unclipped / unclipped.norm())  # ... direction kept
    _, long_run = memory_scan(k, k, v, gates, state, MemoryRule(chunk_size=5, max_grad_norm=0.5))
    assert (long_run.weights[0] - start).norm() <= T * 0.5 + 1e-9  # at most θ·max_grad_norm per token


def test_zero_key_token_keeps_outer_gradients_finite():
    """A zero input (e.g. a padded previous-token half) gives a zero inner gradient; clipping must not turn it into NaN."""
    torch.manual_seed(11)
    layer = NeuralMemory(16, 2, chunk_size=4)
    x = torch.randn(2, 7, 16)
    x[:, 0] = 0
    y, _ = layer(x)
    y.pow(2).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters() if p.grad is not None)


def test_detach_inner_keeps_values_but_cuts_the_inner_gradient_path():
    torch.manual_seed(5)
    x = torch.randn(1, 9, 16, dtype=F64)
    layers = [NeuralMemory(16, 2, chunk_size=4, detach_inner=flag).double() for flag in (False, True)]
    layers[1].load_state_dict(layers[0].state_dict())
    outputs = [layer(x)[0] for layer in layers]
    torch.testing.assert_close(outputs[0], outputs[1])
    params = lambda layer: [layer.k_proj.weight, layer.lr_proj.weight]  # noqa: E731
    full, detached = (
        torch.autograd.grad(out.pow(2).sum(), params(layer), allow_unused=True) for out, layer in zip(outputs, layers)
    )
    assert full[0].abs().max() > 0 and detached[0] is None  # keys reach the output only through inner gradients
    assert detached[1] is not None and detached[1].abs().max() > 0  # the gates still learn


def test_atlas_window_one_is_the_online_rule():
    torch.manual_seed(6)
    online = NeuralMemory(16, 2, chunk_size=4).double()
    atlas = Atlas(16, 2, chunk_size=4, window=1, muon=False).double()
    atlas.load_state_dict(online.state_dict())
    x = torch.randn(2, 10, 16, dtype=F64)
    torch.testing.assert_close(atlas(x)[0], online(x)[0], rtol=1e-12, atol=1e-12)


def test_polynomial_features_give_truncated_exponential_kernel():
    g = torch.Generator().manual_seed(7)
    x, y = randn(5, 6, generator=g), randn(5, 6, generator=g)
    phi = PolynomialFeatures(3)
    assert phi(x).shape[-1] == phi.out_dim(6) == 6 + 21 + 56
    dot = (x * y).sum(-1)
    torch.testing.assert_close((phi(x) * phi(y)).sum(-1), dot + dot**2 / 2 + dot**3 / 6)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"depth": 0}, "depth"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"window": 0}, "window"),
        ({"lr": -1.0}, "lr"),
        ({"max_lr": 0.0}, "max_lr"),
    ],
)
def test_bad_options_raise_value_error(options, message):
    with pytest.raises(ValueError, match=message):
        NeuralMemory(16, 2, **options)
