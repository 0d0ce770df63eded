"""Tests for the Continuum Memory System, self-modifying memory, Titans MAC/MAG/MAL blocks and the Hope block."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import somna.kernels.catalog  # noqa: F401  (registers every kernel)
from somna.kernels.cms import ContinuumMemory
from somna.kernels.self_modifying import MEMORIES, SelfModifyingMemory
from somna.kernels.titans_layers import TitansMAC
from somna.platform.registry import KERNELS

F64 = torch.float64
SPLITS = [(0, 3), (3, 4), (4, 11), (11, 19)]  # piece boundaries that ignore every chunk / period / segment


def leaves(state):
    """All tensors of a (nested) state, in order."""
    if state is None:
        return []
    if isinstance(state, torch.Tensor):
        return [state]
    return [t for item in state for t in leaves(item)]


def assert_pieces_equal_one_call(layer, x):
    whole, whole_state = layer(x)
    state, pieces = None, []
    for a, b in SPLITS:
        y, state = layer(x[:, a:b], state)
        pieces.append(y)
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole, rtol=1e-10, atol=1e-10)
    for got, expected in zip(leaves(state), leaves(whole_state), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    return whole


def assert_every_parameter_gets_gradient(layer, y):
    y.pow(2).mean().backward()
    missing = [name for name, p in layer.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


LAYERS = {
    "cms": dict(periods=(1, 2, 4)),
    "self-modifying": dict(chunk_size=4),
    "hope": dict(chunk_size=4, periods=(1, 2, 4)),
    "titans-mac": dict(segment=5, memory=dict(chunk_size=2)),
    "titans-mag": dict(window=4, memory=dict(chunk_size=3)),
    "titans-mal": dict(window=4, memory=dict(chunk_size=4)),
}


@pytest.mark.parametrize("name", LAYERS)
def test_layer_one_call_equals_pieces_state_carries_and_backward_works(name):
    torch.manual_seed(0)
    layer = KERNELS.get(name)(16, 2, **LAYERS[name]).double()
    x = torch.randn(2, 19, 16, dtype=F64)
    y = assert_pieces_equal_one_call(layer, x)
    _, state = layer(x[:, :8])
    later, fresh = layer(x[:, 8:], state)[0], layer(x[:, 8:])[0]
    assert (later - fresh).abs().max() > 1e-6  # what was written in the first call changes the second
    assert_every_parameter_gets_gradient(layer, y)


# ---------------------------------------------------------------- CMS


@pytest.mark.parametrize("variant", ["nested", "headwise"])
def test_cms_variants_chain_across_calls(variant):
    torch.manual_seed(1)
    layer = ContinuumMemory(8, periods=(2, 4), variant=variant).double()
    assert_pieces_equal_one_call(layer, torch.randn(2, 19, 8, dtype=F64))


def test_cms_block_updates_once_per_period_by_the_summed_chunk_gradient():
    torch.manual_seed(2)
    layer = ContinuumMemory(6, periods=(3, 5), lr=0.5).double()
    x = torch.randn(1, 10, 6, dtype=F64)
    state, changed = layer.initial_state(1), {0: [], 1: []}
    for t in range(10):
        _, new_state = layer(x[:, t : t + 1], state)
        for block in (0, 1):
            if (new_state.weights[block][0] - state.weights[block][0]).abs().max() > 0:
                changed[block].append(t + 1)
        state = new_state
    assert changed == {0: [3, 6, 9], 1: [5, 10]}

    # block 0's first step: θ − Σ_{t<3} η_t ∇ ½‖σ(k̂_t W_in) W_out − x_t W_v‖², k̂_t = normalize(x_t W_k), all at θ_0
    w_in, w_out = (p.detach().clone().requires_grad_() for p in (layer.initial_in[0], layer.initial_out[0]))
    expected = [w_in.detach().clone(), w_out.detach().clone()]
    for t in range(3):
        h = x[0, t]
        loss = 0.5 * (F.silu(F.normalize(layer.keys[0](h), dim=-1) @ w_in) @ w_out - layer.values[0](h)).pow(2).sum()
        grads = torch.autograd.grad(loss, [w_in, w_out])
        scale = min(1.0, 1.0 / torch.sqrt(sum(g.pow(2).sum() for g in grads)).item())  # max_grad_norm = 1
        eta = 0.5 * torch.sigmoid(layer.lr_gates[0](h))
        for slot, grad in enumerate(grads):
            expected[slot] = expected[slot] - eta * scale * grad
    _, after_three = layer(x[:, :3])
    for got, want in zip(after_three.weights[0], expected):
        torch.testing.assert_close(got[0], want.detach(), rtol=1e-10, atol=1e-12)


def test_cms_zero_learning_rate_is_the_frozen_mlp_chain():
    torch.manual_seed(3)
    layer = ContinuumMemory(6, periods=(1, 2), lr=0.0).double()
    x = torch.randn(2, 7, 6, dtype=F64)
    expected = x
    for w_in, w_out, query in zip(layer.initial_in, layer.initial_out, layer.queries):
        expected = expected + F.silu(F.normalize(query(expected), dim=-1) @ w_in) @ w_out
    torch.testing.assert_close(layer(x)[0], expected)


def test_cms_nested_restarts_the_faster_block_when_the_slower_one_updates():
    torch.manual_seed(4)
    layer = ContinuumMemory(6, periods=(2, 4), variant="nested").double()
    x = torch.randn(1, 6, 6, dtype=F64)
    _, at_two = layer(x[:, :2])
    _, at_four = layer(x[:, :4])
    _, at_six = layer(x[:, :6])
    initial = layer.initial_state(1).weights[0]
    assert (at_two.weights[0][0] - initial[0]).abs().max() > 1e-8
    torch.testing.assert_close(at_four.weights[0][0], initial[0])  # restarted at the slow block's update
    assert (at_six.weights[0][0] - initial[0]).abs().max() > 1e-8


def test_cms_accumulate_external_gradients_applied_at_period_end_or_by_flush():
    torch.manual_seed(5)
    layer = ContinuumMemory(6, periods=(2, 4), local_objective=False).double()
    x = torch.randn(1, 3, 6, dtype=F64)
    y, state = layer(x[:, :1])
    loss = y.pow(2).sum()
    grads = [torch.autograd.grad(loss, list(block), retain_graph=True) for block in state.weights]
    state = layer.accumulate(state, grads, scale=0.1)
    flushed = layer.flush(state, blocks=[1])
    torch.testing.assert_close(flushed.weights[1][0], state.weights[1][0] - 0.1 * grads[1][0])
    torch.testing.assert_close(flushed.weights[0][0], state.weights[0][0])  # block 0 still waits
    _, later = layer(x[:, 1:2], state)  # token 2 ends block 0's period: its waiting update lands
    torch.testing.assert_close(later.weights[0][0], state.weights[0][0] - 0.1 * grads[0][0])
    torch.testing.assert_close(later.weights[1][0], state.weights[1][0])
    assert layer.update_periods == [2, 4]


@pytest.mark.parametrize(
    "options, message",
    [({"variant": "ring"}, "variant"), ({"periods": (2, 3), "variant": "nested"}, "divide"), ({"periods": ()}, "periods")],
)
def test_cms_bad_options_raise_value_error(options, message):
    with pytest.raises(ValueError, match=message):
        ContinuumMemory(8, **options)


# ---------------------------------------------------------------- self-modifying memory


def test_self_modifying_memories_read_their_own_projections_of_x():
    """Each generator memory reads its own projection of the full-width x: at init k and v are not the same
    vector (they were, cosine 0.98, when all four read one head's slice of raw x)."""
    torch.manual_seed(6)
    layer = SelfModifyingMemory(32, 2, chunk_size=4)
    x = torch.randn(4, 8, 32)
    k, v = layer.heads(layer.input_proj["key"](x)), layer.heads(layer.input_proj["value"](x))
    assert F.cosine_similarity(k, v, dim=-1).abs().mean() < 0.5
    assert set(layer.input_proj) == set(MEMORIES) - {"memory"}


# ---------------------------------------------------------------- Titans MAC


def test_mac_writes_memory_once_per_segment_with_the_attention_output():
    torch.manual_seed(7)
    layer = TitansMAC(8, 2, segment=4, write="attention", memory=dict(chunk_size=2)).double()
    x = torch.randn(1, 4, 8, dtype=F64)
    initial = layer.initial_state(1).memory

    _, partial = layer(x[:, :3])  # segment unfinished: attended and read, not yet written
    for got, expected in zip(leaves(partial.memory), leaves(initial), strict=True):
        torch.testing.assert_close(got, expected)

    _, full = layer(x)
    retrieved = layer.memory.retrieve(x, initial)  # read before the segment ...
    attended, _ = layer.attention(x, extra=retrieved)  # ... attend ...
    _, written = layer.memory(attended, initial)  # ... then write the attention output
    for got, expected in zip(leaves(full.memory), leaves(written), strict=True):
        torch.testing.assert_close(got, expected)
    _, written_with_input = layer.memory(x, initial)
    assert (full.memory.memory.weights[0] - written_with_input.memory.weights[0]).abs().max() > 1e-6


def test_hope_update_rule_parameters_are_the_lr_and_decay_producers_and_cms_gates():
    block = KERNELS.get("hope")(8, 2, periods=(1, 2))
    name_of = {id(p): name for name, p in block.named_parameters()}
    rule = ("memory.lr_", "memory.decay_", "memory.initial_weights.lr.", "memory.initial_weights.decay.",
            "memory.input_proj.lr.", "memory.input_proj.decay.", "cms.lr_gates.")
    assert sorted(name_of[id(p)] for p in block.update_rule_parameters()) == sorted(
        name for name in name_of.values() if name.startswith(rule)
    )


def test_mac_default_writes_the_segment_input_after_attending():
    torch.manual_seed(7)
    layer = TitansMAC(8, 2, segment=4, memory=dict(chunk_size=2)).double()
    x = torch.randn(1, 4, 8, dtype=F64)
    initial = layer.initial_state(1).memory
    out, full = layer(x)
    read, written = layer.memory(x, initial)
    for got, expected in zip(leaves(full.memory), leaves(written), strict=True):
        torch.testing.assert_close(got, expected)
    attended, _ = layer.attention(x, extra=layer.memory.retrieve(x, initial))
    torch.testing.assert_close(out, x + attended * torch.sigmoid(read))
    with pytest.raises(ValueError, match="write"):
        TitansMAC(8, 2, write="output")
