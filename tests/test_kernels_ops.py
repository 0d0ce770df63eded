"""Functional ops: recurrent forms against the formulas, chunkwise forms against the recurrent ones."""

from __future__ import annotations

import pytest
import torch

from somna.kernels.delta_rule import delta_rule, gated_delta_rule
from somna.kernels.linear_attention import linear_attention

OPS = ("linear_attention", "delta_rule", "gated_delta_rule")


def make_inputs(op: str, *, length: int = 37, dtype=torch.float64, seed: int = 0, d_k: int = 8, d_v: int = 6):
    generator = torch.Generator().manual_seed(seed)
    batch, heads = 2, 3

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=dtype)

    tensors = {
        "q": randn(batch, heads, length, d_k),
        "k": torch.nn.functional.normalize(randn(batch, heads, length, d_k), dim=-1),
        "v": randn(batch, heads, length, d_v),
    }
    if op != "linear_attention":
        tensors["beta"] = torch.rand(batch, heads, length, generator=generator, dtype=dtype)
    if op == "gated_delta_rule":
        tensors["log_decay"] = -torch.rand(batch, heads, length, generator=generator, dtype=dtype)
    initial_state = randn(batch, heads, d_k, d_v)
    return tensors, initial_state


def call(op: str, tensors: dict, **kwargs):
    function = {"linear_attention": linear_attention, "delta_rule": delta_rule, "gated_delta_rule": gated_delta_rule}[op]
    return function(*tensors.values(), **kwargs)


def formula_loop(op: str, tensors: dict, initial_state: torch.Tensor):
    """One (batch, head, token) at a time, written straight from the update rules in issue 4."""
    q, k, v = tensors["q"], tensors["k"], tensors["v"]
    batch, heads, length, _ = q.shape
    outputs = torch.zeros(*q.shape[:3], v.shape[-1], dtype=q.dtype)
    final = initial_state.clone()
    for b in range(batch):
        for h in range(heads):
            S = initial_state[b, h].clone()
            for t in range(length):
                k_t, v_t = k[b, h, t], v[b, h, t]
                if op == "linear_attention":
                    S = S + torch.outer(k_t, v_t)
                else:
                    decay = tensors["log_decay"][b, h, t].exp() if op == "gated_delta_rule" else 1.0
                    beta_t = tensors["beta"][b, h, t]
                    S = decay * S + beta_t * torch.outer(k_t, v_t - decay * (k_t @ S))
                outputs[b, h, t] = q[b, h, t] @ S
            final[b, h] = S
    return outputs, final


@pytest.mark.parametrize("op", OPS)
def test_recurrent_form_matches_formula(op):
    tensors, initial_state = make_inputs(op, length=9)
    expected_o, expected_s = formula_loop(op, tensors, initial_state)
    o, s = call(op, tensors, initial_state=initial_state)
    torch.testing.assert_close(o, expected_o, rtol=0, atol=1e-12)
    torch.testing.assert_close(s, expected_s, rtol=0, atol=1e-12)


def test_linear_attention_hand_computed():
    # One head, d=1: S_t = Σ k v = 1·2, then + 3·4 -> o = q S = [1·2, 2·14].
    q = torch.tensor([1.0, 2.0]).view(1, 1, 2, 1)
    k = torch.tensor([1.0, 3.0]).view(1, 1, 2, 1)
    v = torch.tensor([2.0, 4.0]).view(1, 1, 2, 1)
    for chunk_size in (None, 2):
        o, s = linear_attention(q, k, v, chunk_size=chunk_size)
        assert o.flatten().tolist() == [2.0, 28.0]
        assert s.item() == 14.0


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("chunk_size", [1, 5, 16, 64])
def test_chunkwise_equals_recurrent_float64(op, chunk_size):
    tensors, initial_state = make_inputs(op, length=37)  # 37 is prime: every chunk size leaves a ragged tail
    for state in (None, initial_state):
        o_ref, s_ref = call(op, tensors, initial_state=state)
        o, s = call(op, tensors, initial_state=state, chunk_size=chunk_size)
        torch.testing.assert_close(o, o_ref, rtol=0, atol=1e-8)
        torch.testing.assert_close(s, s_ref, rtol=0, atol=1e-8)


@pytest.mark.parametrize("op", OPS)
def test_segmented_chunkwise_equals_recurrent(op, monkeypatch):
    monkeypatch.setattr("somna.kernels.chunking.SEGMENT_TOKENS", 10)  # segments of 2 chunks of 5 (+ a ragged tail)
    tensors, initial_state = make_inputs(op, length=37)
    o_ref, s_ref = call(op, tensors, initial_state=initial_state)
    for chunk_size in (5, 16):  # 16 > 10: one chunk per segment
        o, s = call(op, tensors, initial_state=initial_state, chunk_size=chunk_size)
        torch.testing.assert_close(o, o_ref, rtol=0, atol=1e-8)
        torch.testing.assert_close(s, s_ref, rtol=0, atol=1e-8)


@pytest.mark.parametrize("op", OPS)
def test_chunkwise_equals_recurrent_float32(op):
    tensors, initial_state = make_inputs(op, length=200, dtype=torch.float32, d_k=32, d_v=32)
    o_ref, s_ref = call(op, tensors, initial_state=initial_state)
    o, s = call(op, tensors, initial_state=initial_state, chunk_size=64)
    assert ((o - o_ref).norm() / o_ref.norm()).item() < 1e-4
    assert ((s - s_ref).norm() / s_ref.norm()).item() < 1e-4


@pytest.mark.parametrize("op", OPS)
def test_gradients_agree(op):
    tensors, initial_state = make_inputs(op, length=23)
    leaves = {**tensors, "initial_state": initial_state}

    def gradients(chunk_size):
        inputs = {name: value.clone().requires_grad_(True) for name, value in leaves.items()}
        state = inputs.pop("initial_state")
        o, s = call(op, inputs, initial_state=state, chunk_size=chunk_size)
        weights = torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)
        ((o * weights).sum() + s.square().sum()).backward()
        return {name: value.grad for name, value in {**inputs, "initial_state": state}.items()}

    reference = gradients(None)
    chunked = gradients(8)
    for name in leaves:
        torch.testing.assert_close(chunked[name], reference[name], rtol=0, atol=1e-8, msg=name)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("chunk_size", [None, 8])
def test_state_carries_across_calls(op, chunk_size):
    tensors, initial_state = make_inputs(op, length=30)
    o_full, s_full = call(op, tensors, initial_state=initial_state, chunk_size=chunk_size)
    first = {name: value[:, :, :13] for name, value in tensors.items()}
    second = {name: value[:, :, 13:] for name, value in tensors.items()}
    o1, s1 = call(op, first, initial_state=initial_state, chunk_size=chunk_size)
    o2, s2 = call(op, second, initial_state=s1, chunk_size=chunk_size)
    torch.testing.assert_close(torch.cat([o1, o2], dim=2), o_full, rtol=0, atol=1e-10)
    torch.testing.assert_close(s2, s_full, rtol=0, atol=1e-10)


def test_gated_is_stable_under_strong_decay():
    tensors, initial_state = make_inputs("gated_delta_rule", length=64, dtype=torch.float32)
    tensors["log_decay"] = tensors["log_decay"] * 80.0  # e^{γ} underflows to 0 within a chunk
    o_ref, s_ref = call("gated_delta_rule", tensors, initial_state=initial_state)
    o, s = call("gated_delta_rule", tensors, initial_state=initial_state, chunk_size=32)
    assert torch.isfinite(o).all() and torch.isfinite(s).all()
    torch.testing.assert_close(o, o_ref, rtol=1e-4, atol=1e-5)


def test_zero_decay_gated_equals_delta_rule():
    tensors, initial_state = make_inputs("gated_delta_rule", length=20)
    tensors["log_decay"] = torch.zeros_like(tensors["log_decay"])
    plain = {name: value for name, value in tensors.items() if name != "log_decay"}
    for chunk_size in (None, 6):
        gated = call("gated_delta_rule", tensors, initial_state=initial_state, chunk_size=chunk_size)
        ungated = call("delta_rule", plain, initial_state=initial_state, chunk_size=chunk_size)
        torch.testing.assert_close(gated, ungated, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.update(v=t["v"][:, :, :5]), "q, k must be"),
        (lambda t: t.update(beta=t["beta"][..., :5]), "beta must be"),
    ],
)
def test_bad_shapes_raise_value_error(change, message):
    tensors, _ = make_inputs("delta_rule", length=10)
    change(tensors)
    with pytest.raises(ValueError, match=message):
        call("delta_rule", tensors)


@pytest.mark.parametrize("chunk_size", [0, -3, 2.5, True])
def test_bad_chunk_size_raises_value_error(chunk_size):
    tensors, _ = make_inputs("linear_attention", length=10)
    with pytest.raises(ValueError, match="chunk_size"):
        call("linear_attention", tensors, chunk_size=chunk_size)


def test_bad_initial_state_raises_value_error():
    tensors, initial_state = make_inputs("gated_delta_rule", length=10)
    with pytest.raises(ValueError, match="initial_state"):
        call("gated_delta_rule", tensors, initial_state=initial_state[:, :1])
