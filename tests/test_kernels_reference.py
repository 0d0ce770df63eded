"""Fast forms against the readable references of kernels/reference.py: outputs, final state and every gradient.

Everything runs in float64, so the tolerances are near round-off; Muon is the
exception (Newton–Schulz runs in float32 by design).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import somna.kernels.catalog  # noqa: F401  (registers every kernel)
from somna.kernels.memory_scan import Gates, MemoryRule, MemoryState, memory_scan
from somna.kernels.miras import HuberBias, LpBias, LqNormalizedRead, SoftmaxRead
from somna.kernels.reference import (
    cms_reference,
    hope_reference,
    memory_reference,
    neural_memory_reference,
    self_modifying_reference,
)
from somna.kernels.self_modifying import MEMORIES
from somna.platform.registry import KERNELS

F64 = torch.float64
EXACT = dict(rtol=1e-9, atol=1e-10)
MUON = dict(rtol=1e-5, atol=1e-6)  # Newton–Schulz in float32

BIASES = {"l2": lambda: None, "lp": lambda: LpBias(3, sharpness=None), "huber": lambda: HuberBias(0.8, num_heads=3)}
RETENTIONS = {"identity": lambda: None, "lq": lambda: LqNormalizedRead(4), "softmax": lambda: SoftmaxRead()}
CASES = {  # name: (depth, chunk, window, momentum, muon, bias, retention, max_grad_norm)
    "titans-deep-chunk5": (2, 5, 1, True, False, "l2", "identity", None),
    "titans-clipped": (2, 4, 1, True, False, "l2", "identity", 0.3),
    "titans-depth3-no-momentum": (3, 4, 1, False, False, "l2", "identity", None),
    "omega-window3": (2, 4, 3, True, False, "l2", "identity", None),
    "omega-window6-chunk2": (2, 2, 6, True, False, "l2", "identity", 0.5),
    "atlas-muon-window2": (2, 4, 2, True, True, "l2", "identity", None),
    "muon-no-momentum": (1, 3, 1, False, True, "l2", "identity", 1.0),
    "moneta": (2, 4, 1, False, False, "lp", "lq", None),
    "yaad": (2, 4, 1, True, False, "huber", "identity", None),
    "memora": (2, 6, 1, False, False, "l2", "softmax", None),
}


def assert_all_close(got, expected, tolerance, what):
    for index, (a, b) in enumerate(zip(got, expected, strict=True)):
        torch.testing.assert_close(a, b, **tolerance, msg=lambda m: f"{what}[{index}]: {m}")


def gradients(output, inputs):
    probe = torch.randn(output.shape, generator=torch.Generator().manual_seed(99), dtype=output.dtype)
    return torch.autograd.grad((output * probe).sum(), inputs, allow_unused=True)


@pytest.mark.parametrize("case", CASES)
def test_memory_scan_equals_reference_outputs_state_and_every_gradient(case):
    depth, chunk, window, use_momentum, muon, bias, retention, clip = CASES[case]
    g = torch.Generator().manual_seed(2)
    B, H, T, d, hidden = 2, 3, 13, 5, 7

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=F64)

    def gate(low, high):
        return (low + (high - low) * torch.rand(B, H, T, generator=g, dtype=F64)).requires_grad_()

    q, k = (F.normalize(randn(B, H, T, d), dim=-1).requires_grad_() for _ in range(2))
    v = randn(B, H, T, d).requires_grad_()
    widths = [d] + [hidden] * (depth - 1) + [d]
    weights = [(randn(B, H, a, b) / math.sqrt(a)).requires_grad_() for a, b in zip(widths[:-1], widths[1:])]
    momentum = [(0.1 * randn(*w.shape)).requires_grad_() for w in weights] if use_momentum else None
    gates = Gates(gate(0.05, 0.5), gate(0.5, 0.95) if use_momentum else None, gate(0.8, 1.0), gate(0.5, 1.0))
    rule = MemoryRule(
        chunk_size=chunk, window=window, muon=muon, attentional_bias=BIASES[bias](), retention=RETENTIONS[retention](),
        max_grad_norm=clip,
    ).double()

    state = MemoryState.start(tuple(weights), momentum=use_momentum, window=window)
    state = state._replace(momentum=tuple(momentum) if use_momentum else None)
    y, final = memory_scan(q, k, v, gates, state, rule)
    ref_y, ref_weights, ref_momentum = memory_reference(q, k, v, gates, weights, momentum, rule)

    tolerance = MUON if muon else EXACT
    torch.testing.assert_close(y, ref_y, **tolerance)
    assert_all_close(final.weights, ref_weights, tolerance, "weights")
    if use_momentum:
        assert_all_close(final.momentum, ref_momentum, tolerance, "momentum")
    leaves = [q, k, v, *(x for x in gates if x is not None), *weights, *(momentum or [])]
    assert_all_close(gradients(y, leaves), gradients(ref_y, leaves), tolerance, "gradient")


LAYERS = {  # registered NeuralMemory-family layers with small, fast options
    "titans": {},
    "moneta": {},
    "yaad": {"delta": 0.8},  # residuals here straddle 0.8: both Huber branches run
    "memora": {},
    "atlas": {"window": 3},
    "atlas-muon-poly": {"muon": True, "degree": 2, "window": 2},
}


@pytest.mark.parametrize("case", LAYERS)
def test_memory_layer_equals_reference_outputs_state_and_every_gradient(case):
    torch.manual_seed(3)
    layer = KERNELS.get(case.split("-")[0])(8, 2, chunk_size=4, **LAYERS[case]).double()
    x = torch.randn(2, 11, 8, dtype=F64, requires_grad=True)
    y, state = layer(x)
    ref_y, ref_weights, ref_momentum = neural_memory_reference(layer, x)
    tolerance = MUON if "muon" in case else EXACT
    torch.testing.assert_close(y, ref_y, **tolerance)
    memory = layer.current_memory(state)
    assert_all_close(memory.weights, ref_weights, tolerance, "weights")
    if ref_momentum is not None:
        assert_all_close(memory.momentum, ref_momentum, tolerance, "momentum")
    leaves = [x, *layer.parameters()]
    assert_all_close(gradients(y, leaves), gradients(ref_y, leaves), tolerance, "gradient")


def test_self_modifying_equals_reference_outputs_state_and_every_gradient():
    torch.manual_seed(6)
    layer = KERNELS.get("self-modifying")(8, 2, chunk_size=4).double()
    x = torch.randn(2, 10, 8, dtype=F64, requires_grad=True)
    y, state = layer(x)
    ref_y, ref_weights = self_modifying_reference(layer, x)
    torch.testing.assert_close(y, ref_y, **EXACT)
    memories = layer.current_memories(state).weights  # (B, 5·H, ...) in MEMORIES order
    for layer_index in range(2):
        stacked = torch.cat([ref_weights[name][layer_index] for name in MEMORIES], dim=1)
        torch.testing.assert_close(memories[layer_index], stacked, **EXACT)
    leaves = [x, *layer.parameters()]
    assert_all_close(gradients(y, leaves), gradients(ref_y, leaves), EXACT, "gradient")


@pytest.mark.parametrize("variant", ["sequential", "nested", "headwise"])
def test_cms_equals_reference_outputs_state_and_every_gradient(variant):
    torch.manual_seed(1)
    layer = KERNELS.get("cms")(6, periods=(2, 4), variant=variant, max_grad_norm=0.5).double()
    x = torch.randn(2, 11, 6, dtype=F64, requires_grad=True)
    y, state = layer(x)
    ref_y, ref_weights = cms_reference(layer, x)
    torch.testing.assert_close(y, ref_y, **EXACT)
    for got, expected in zip(state.weights, ref_weights, strict=True):
        assert_all_close(got, expected, EXACT, "weights")
    leaves = [x, *layer.parameters()]
    assert_all_close(gradients(y, leaves), gradients(ref_y, leaves), EXACT, "gradient")


def test_hope_equals_reference_outputs_and_every_gradient():
    torch.manual_seed(4)
    block = KERNELS.get("hope")(8, 2, chunk_size=4, periods=(1, 2, 4)).double()
    x = torch.randn(2, 9, 8, dtype=F64, requires_grad=True)
    y, _ = block(x)
    ref_y = hope_reference(block, x)
    torch.testing.assert_close(y, ref_y, **EXACT)
    leaves = [x, *block.parameters()]
    assert_all_close(gradients(y, leaves), gradients(ref_y, leaves), EXACT, "gradient")
