"""Layers over the functional ops: the layer contract, state passing, and what the layer computes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import somna.kernels.catalog  # noqa: F401  (registers the layers)
from somna.kernels.delta_rule import delta_rule
from somna.platform.registry import KERNELS

LAYERS = ("linear-attention", "deltanet", "gated-deltanet")


def build(name: str, dim: int = 16, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    return KERNELS.get(name)(dim, **options).double()


def random_input(length: int = 21, dim: int = 16) -> torch.Tensor:
    return torch.randn(2, length, dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.mark.parametrize("name", LAYERS)
def test_forward_backward_shapes_and_gradients(name):
    layer = build(name, num_heads=2, chunk_size=8)
    y, state = layer(random_input())
    assert y.shape == (2, 21, 16) and state.shape == (2, 2, 8, 8)
    y.square().mean().backward()
    for parameter_name, parameter in layer.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, parameter_name


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("chunk_size", [None, 4])
def test_pieces_with_state_equal_one_call(name, chunk_size):
    layer = build(name, chunk_size=chunk_size)
    x = random_input()
    y_full, state_full = layer(x)
    pieces, state = [], None
    for piece in x.split([5, 1, 9, 6], dim=1):
        y, state = layer(piece, state)
        pieces.append(y)
    torch.testing.assert_close(torch.cat(pieces, dim=1), y_full, rtol=0, atol=1e-10)
    torch.testing.assert_close(state, state_full, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", LAYERS)
def test_chunkwise_layer_equals_recurrent_layer(name):
    chunked, recurrent = build(name, chunk_size=8), build(name, chunk_size=None)
    x = random_input()
    torch.testing.assert_close(chunked(x), recurrent(x), rtol=0, atol=1e-10)


def test_deltanet_is_the_delta_rule_over_normalised_projections():
    layer = build("deltanet", num_heads=2)
    x = random_input()
    heads = lambda t: t.view(2, 21, 2, 8).transpose(1, 2)  # noqa: E731
    q = F.normalize(heads(x @ layer.q_proj.weight.T), dim=-1)
    k = F.normalize(heads(x @ layer.k_proj.weight.T), dim=-1)
    v = heads(x @ layer.v_proj.weight.T)
    beta = torch.sigmoid(x @ layer.beta_proj.weight.T + layer.beta_proj.bias).transpose(1, 2)
    o, s = delta_rule(q, k, v, beta)
    expected = o.transpose(1, 2).reshape(2, 21, 16) @ layer.out_proj.weight.T
    torch.testing.assert_close(layer(x), (expected, s), rtol=0, atol=1e-10)


def test_gated_deltanet_decay_starts_within_documented_range():
    layer = build("gated-deltanet", num_heads=4)
    rates = F.softplus(layer.decay_proj.bias)
    torch.testing.assert_close(rates[[0, -1]], torch.tensor([1e-3, 1e-1], dtype=torch.float64))


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="num_heads"):
        build("deltanet", dim=10, num_heads=4)
    with pytest.raises(ValueError, match="chunk_size"):
        build("deltanet", chunk_size=0)
    with pytest.raises(ValueError, match=r"expects x of shape \(B, T, 16\)"):
        build("linear-attention")(torch.zeros(2, 3, 7, dtype=torch.float64))
