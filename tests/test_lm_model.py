"""The sleep LM: locked experts are exactly inert, expansion is function-preserving, save/load is exact."""

from __future__ import annotations

import torch
from torch import nn

from somna.learners.text.model import SleepLM, SleepLMConfig
from somna.platform.registry import KERNELS


def tiny(**overrides) -> SleepLM:
    torch.manual_seed(0)
    options = dict(dim=32, num_heads=2, cms_periods=[1, 4], num_experts=3, expert_rank=4, max_positions=64) | overrides
    return SleepLM(SleepLMConfig(**options)).eval()


def batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(0, 256, (3, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, :5] = 0  # left padding
    return {"input_ids": ids, "attention_mask": mask}


def test_locked_experts_contribute_exactly_zero():
    model = tiny()
    before = model(**batch()).logits
    with torch.no_grad():
        for expert in model.cms[1].experts:
            for parameter in expert.parameters():
                parameter.add_(torch.randn_like(parameter))
    assert torch.equal(model(**batch()).logits, before)


def test_unlocking_is_function_preserving_until_trained():
    model = tiny()
    before = model(**batch()).logits
    assert model.unlock_expert(1) == 0
    assert model.cms[1].expert_mask.tolist() == [1.0, 0.0, 0.0]
    assert torch.equal(model(**batch()).logits, before)
    with torch.no_grad():
        model.cms[1].experts[0].up.weight.add_(0.1)
    assert not torch.allclose(model(**batch()).logits, before)


def test_reset_experts_locks_and_zeroes_them():
    model = tiny()
    model.unlock_expert(0)
    model.unlock_expert(0)
    with torch.no_grad():
        model.cms[0].experts[1].up.weight.fill_(1.0)
    assert model.reset_experts(0) == 2
    assert model.cms[0].unlocked() == [] and not model.cms[0].experts[1].up.weight.detach().any()
    assert [model.unlock_expert(1) for _ in range(4)] == [0, 1, 2, None]  # a full block unlocks nothing


def test_top_k_keeps_only_the_strongest_gates():
    model = tiny(expert_top_k=1)
    for _ in range(3):
        model.unlock_expert(1)
    block = model.cms[1]
    with torch.no_grad():
        for expert in block.experts:
            expert.up.weight.normal_()
        block.experts[2].gate.bias.fill_(100.0)  # expert 2 always wins the top-1
    h = torch.randn(2, 5, 32)
    normed = block.norm(h)
    expected = h + block.mlp(normed) + block.experts[2](normed)  # sigmoid(~100) == 1
    assert torch.allclose(block(h), expected, atol=1e-6)


def test_save_and_load_are_exact(tmp_path):
    model = tiny()
    model.unlock_expert(1)
    with torch.no_grad():
        model.cms[1].experts[0].up.weight.normal_()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    reloaded = SleepLM.from_pretrained(tmp_path).eval()
    assert torch.equal(reloaded.cms[1].expert_mask, model.cms[1].expert_mask)
    assert torch.equal(reloaded(**batch()).logits, model(**batch()).logits)


def test_left_padding_does_not_change_a_sequence_logits():
    model = tiny()
    ids = torch.randint(0, 256, (1, 8), generator=torch.Generator().manual_seed(3))
    alone = model(input_ids=ids).logits
    padded = model(input_ids=torch.cat([torch.full((1, 4), 256), ids], 1), attention_mask=torch.tensor([[0] * 4 + [1] * 8])).logits
    assert torch.allclose(padded[:, 4:], alone, atol=1e-5)


class ScaleKernel(nn.Module):
    """A stand-in registered memory layer with the kernel contract: Cls(dim, num_heads), forward(x, state)."""

    def __init__(self, dim: int, num_heads: int, scale: float = 1.0):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.scale = scale

    def forward(self, x, state=None):
        return self.scale * self.proj(x).cumsum(dim=1), state


def test_short_term_layer_can_be_a_registered_kernel():
    if "test-lm-scale-kernel" not in KERNELS:
        KERNELS.add("test-lm-scale-kernel", ScaleKernel)
    model = tiny(short_term="test-lm-scale-kernel", short_term_options={"scale": 0.5})
    assert isinstance(model.model.layers[0].mixer.layer, ScaleKernel)
    assert model(**batch()).logits.shape == (3, 12, 259)
