"""somna's SleepLM and the CMS wrapping any causal LM gets: locked experts are inert, expansion is function-preserving."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from somna.learners.text.experts import ExpertMLP, attach_cms, cms_blocks, novelty_routing
from somna.learners.text.model import SleepLM, SleepLMConfig, writing
from somna.platform.registry import KERNELS


def tiny(**overrides) -> SleepLM:
    torch.manual_seed(0)
    options = dict(vocab_size=300, dim=32, num_heads=2, num_layers=3, max_positions=64) | overrides
    return SleepLM(SleepLMConfig(**options)).eval()


def tiny_llama() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()


def batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(3, 300, (3, 12), generator=torch.Generator().manual_seed(1))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.mark.parametrize("make", [tiny, tiny_llama])
def test_the_cms_wraps_the_last_mlps_and_changes_nothing_until_an_expert_is_trained(make):
    model = make()
    before = model(**batch()).logits
    blocks = attach_cms(model, levels=2, num_experts=3, rank=4)
    assert len(blocks) == 2 and blocks == cms_blocks(model) and all(isinstance(b, ExpertMLP) for b in blocks)
    wrapped = [name for name, module in model.named_modules() if isinstance(module, ExpertMLP)]
    assert [name.split(".")[-2] for name in wrapped] == ["1", "2"]  # the MLPs of the last two of three layers
    assert torch.equal(model(**batch()).logits, before)
    with torch.no_grad():  # locked experts are never computed, whatever their weights
        for expert in blocks[1].experts:
            for parameter in expert.parameters():
                parameter.add_(torch.randn_like(parameter))
    assert torch.equal(model(**batch()).logits, before)
    assert blocks[1].unlock() == 0 and blocks[1].expert_mask.tolist() == [1.0, 0.0, 0.0]
    assert torch.equal(model(**batch()).logits, before)  # a fresh expert's `up` is zero
    with torch.no_grad():
        blocks[1].experts[0].up.weight.add_(0.1)
    assert not torch.allclose(model(**batch()).logits, before)


def test_more_levels_than_mlps_is_a_one_line_error():
    with pytest.raises(ValueError, match="cms_periods has 4 levels but the base .* has 3 MLP layers"):
        attach_cms(tiny(), levels=4, num_experts=1, rank=2)


def test_reset_locks_and_zeroes_and_a_full_level_unlocks_nothing():
    (block,) = attach_cms(tiny(), levels=1, num_experts=3, rank=4)
    block.unlock(), block.unlock()
    with torch.no_grad():
        block.experts[1].up.weight.fill_(1.0)
    assert block.reset_experts() == 2
    assert block.unlocked() == [] and not block.experts[1].up.weight.detach().any()
    assert [block.unlock() for _ in range(4)] == [0, 1, 2, None]


def test_top_k_keeps_only_the_strongest_gates():
    (block,) = attach_cms(tiny(), levels=1, num_experts=3, rank=4, top_k=1)
    for _ in range(3):
        block.unlock()
    with torch.no_grad():
        for expert in block.experts:
            expert.up.weight.normal_()
        block.experts[2].gate.bias.fill_(100.0)  # expert 2 always wins the top-1
    h = torch.randn(2, 5, 32)
    assert torch.allclose(block(h), block.base(h) + block.experts[2](h), atol=1e-6)  # sigmoid(~100) == 1


def test_a_keyed_expert_acts_only_near_its_keys():
    """Without keys the router alone gates; with keys stored from the first sequence, the expert adds exactly
    sigmoid(router) x its output there and nothing at all on the other sequence (random 32-d inputs are far from
    every key at cosine 0.99); a reset expert has no keys again."""
    (block,) = attach_cms(tiny(), levels=1, num_experts=2, rank=4, keys=8, key_threshold=0.99)
    e = block.unlock()
    with torch.no_grad():
        block.experts[e].up.weight.normal_()
    h = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(2))
    routed = block.base(h) + torch.sigmoid(block.experts[e].gate(h)) * block.experts[e](h)
    assert torch.allclose(block(h), routed, atol=1e-6)  # no keys yet: the router alone
    assert block.store_keys(e, h[0], torch.Generator().manual_seed(0)) == 5 and int(block.key_counts[e]) == 5
    assert torch.allclose(block.expert_keys[e, :5].norm(dim=-1), torch.ones(5)) and not block.expert_keys[e, 5:].any()
    out = block(h)
    assert torch.allclose(out[0], routed[0], atol=1e-6) and torch.equal(out[1], block.base(h[1]))
    assert block.store_keys(e, h.flatten(0, 1), torch.Generator().manual_seed(0)) == 8  # a full bank keeps a seeded choice
    chosen = block.expert_keys[e] @ torch.nn.functional.normalize(h.flatten(0, 1), dim=-1).T
    assert torch.allclose(chosen.amax(dim=-1), torch.ones(8))  # every key is one of the inputs
    block.reset_experts()
    assert int(block.key_counts[e]) == 0 and not block.expert_keys.any()


@pytest.mark.parametrize("make", [tiny, tiny_llama])
def test_a_key_window_sums_the_inputs_before_each_position_and_skips_padding(make):
    """A query is the normalised sum of the unit inputs at a position and the window - 1 before it (by hand); through
    the model the padding mask reaches the level, so a left-padded copy of a sequence opens the same gates and gives
    the same logits at its real tokens as the sequence alone (keys at every position, threshold 0.999: a window that
    took in a pad would shut); generation re-reads the whole sequence (no KV cache)."""
    model = make()
    (block,) = attach_cms(model, levels=1, num_experts=1, rank=4, keys=64, key_threshold=0.999, key_window=3)
    h = torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(3))
    units = torch.nn.functional.normalize(h[0], dim=-1)
    by_hand = torch.stack([units[max(0, t - 2) : t + 1].sum(dim=0) for t in range(5)])
    assert torch.allclose(block.key_queries(h)[0], torch.nn.functional.normalize(by_hand, dim=-1), atol=1e-6)
    assert torch.allclose(block.key_queries(h, torch.tensor([[0, 0, 1, 1, 1]]))[0, 2:], block.key_queries(h[:, 2:])[0], atol=1e-6)

    e = block.unlock()
    with torch.no_grad():
        block.experts[e].up.weight.normal_()
        block.experts[e].gate.bias.fill_(100.0)  # the router fully open: the key gate alone decides
    ids = torch.randint(3, 300, (1, 8), generator=torch.Generator().manual_seed(4))
    seen = []
    handle = block.register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
    model(input_ids=ids, attention_mask=torch.ones_like(ids))
    handle.remove()
    block.store_keys(e, block.key_queries(seen[0])[0], torch.Generator().manual_seed(0))

    def logits(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits

    alone = logits(ids, torch.ones_like(ids))
    padded = logits(torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], dim=1), torch.tensor([[0] * 3 + [1] * 8]))
    assert torch.allclose(padded[:, 3:], alone, atol=1e-4) and block.padding is None
    block.expert_mask.zero_()
    assert not torch.allclose(logits(ids, torch.ones_like(ids)), alone, atol=1e-4)  # the expert acts, so the match above has teeth
    block.expert_mask[e] = 1.0
    if make is tiny_llama:
        assert model.generation_config.use_cache is False
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False)


def test_keys_travel_in_the_state_dict_and_a_keyless_cms_has_none():
    keyed = attach_cms(tiny(), levels=2, num_experts=2, rank=4, keys=6)
    keyed[1].unlock()
    keyed[1].store_keys(0, torch.randn(4, 32), torch.Generator().manual_seed(0))
    state = keyed[1].state_dict()
    assert {"expert_keys", "key_counts"} <= set(state)
    fresh = attach_cms(tiny(), levels=2, num_experts=2, rank=4, keys=6)[1]
    fresh.load_state_dict(state)
    assert torch.equal(fresh.expert_keys, keyed[1].expert_keys) and fresh.key_counts.tolist() == [4, 0]
    assert not any("key" in name for name in attach_cms(tiny(), levels=2, num_experts=2, rank=4)[1].state_dict())


def test_novelty_routing_changes_the_model_only_while_dreaming():
    model = tiny()
    blocks = attach_cms(model, levels=2, num_experts=2, rank=4)
    blocks[1].unlock()
    with torch.no_grad():
        blocks[1].experts[0].up.weight.normal_()
    awake = model(**batch()).logits
    with novelty_routing(model, torch.Generator().manual_seed(0)):
        assert blocks[1].novelty_expert == 0 and blocks[0].novelty_expert is None  # level 0 has none unlocked
        dreaming = model(**batch()).logits
    assert not torch.allclose(dreaming, awake)
    assert torch.equal(model(**batch()).logits, awake) and blocks[1].novelty_expert is None


def test_save_and_load_are_exact(tmp_path):
    model = tiny()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    reloaded = SleepLM.from_pretrained(tmp_path).eval()
    assert reloaded.config.hidden_size == 32 and reloaded.config.max_position_embeddings == 64
    assert torch.equal(reloaded(**batch()).logits, model(**batch()).logits)


def test_padding_does_not_change_a_sequence_logits():
    model = tiny()
    ids = torch.randint(3, 300, (1, 8), generator=torch.Generator().manual_seed(3))
    alone = model(input_ids=ids).logits
    left = model(input_ids=torch.cat([torch.zeros(1, 4, dtype=torch.long), ids], 1), attention_mask=torch.tensor([[0] * 4 + [1] * 8])).logits
    right = model(input_ids=torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], 1), attention_mask=torch.tensor([[1] * 8 + [0] * 4])).logits
    assert torch.allclose(left[:, 4:], alone, atol=1e-5) and torch.allclose(right[:, :8], alone, atol=1e-5)


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
    assert model(**batch()).logits.shape == (3, 12, 300)


def mixers(model: SleepLM) -> list:
    return [layer.mixer for layer in model.model.layers]


@pytest.mark.parametrize("name", ["linear-attention", "deltanet", "gated-deltanet", "titans", "titans-mac", "atlas", "hope", "memora"])
def test_a_carried_kernel_state_continues_the_sequence_for_a_whole_batch(name):
    """The `kernel` fast memory's contract: writing the first tokens, then reading the rest from the carried state,
    is the model on the whole sequence; the one written state serves every row of a batch."""
    model = tiny(short_term=name, num_heads=4)
    ids = torch.randint(3, 300, (1, 12), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        whole = model(input_ids=ids).logits
        with writing(mixers(model)):
            model(input_ids=ids[:, :7])
        rest = model(input_ids=ids[:, 7:].expand(3, -1)).logits
    torch.testing.assert_close(rest, whole[:, 7:].expand(3, -1, -1), rtol=1e-4, atol=1e-4)
