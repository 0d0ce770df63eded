"""A tiny from-scratch causal LM with a Continuum Memory System of masked low-rank experts.

Architecture (PAPERS.md, "Language Models Need Sleep"): token + position
embeddings -> `num_layers` short-term layers (causal attention, or a memory
layer registered in `somna.platform.registry.KERNELS`) -> the CMS, a chain of
MLP blocks with update periods C(l) -> LM head. Each CMS block is a mixture of
experts: an always-on MLP plus `num_experts` pre-allocated low-rank experts
(x -> up(act(down(x))), down: d x r, up: r x d) behind a sigmoid router. Experts
start locked (mask 0) and contribute exactly nothing; a sleep unlocks one
(`unlock_expert`). Because `up` starts at zero and the router is a sigmoid
(not a softmax over experts), unlocking never changes the logits until the
expert is trained: expansion is function-preserving.

Stable module names (PEFT LoRA may target them), Hugging Face layout:
  model.embed, model.position, model.layers.{i}.norm, model.layers.{i}.mixer
  (attention: .qkv, .out), model.cms.{l}.norm, model.cms.{l}.mlp.fc_in,
  model.cms.{l}.mlp.fc_out, model.cms.{l}.experts.{e}.down / .up / .gate,
  model.norm, lm_head.  Buffer model.cms.{l}.expert_mask: (num_experts,), 1.0 = unlocked.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutput

from somna.platform.registry import KERNELS


class SleepLMConfig(PretrainedConfig):
    """Sizes of the sleep LM; `cms_periods` gives one CMS block per entry (its update period C(l))."""

    model_type = "somna-sleep-lm"

    def __init__(
        self,
        vocab_size: int = 259,
        dim: int = 64,
        num_heads: int = 4,
        num_layers: int = 1,
        max_positions: int = 256,
        mlp_ratio: int = 2,
        cms_periods: tuple[int, ...] | list[int] = (1, 4, 16),
        num_experts: int = 4,
        expert_rank: int = 8,
        expert_top_k: int = 0,
        short_term: str = "attention",
        short_term_options: dict | None = None,
        pad_token_id: int = 256,
        bos_token_id: int = 257,
        eos_token_id: int = 258,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.dim = dim
        self.num_heads = num_heads
        self.num_layers = num_layers
        self.max_positions = max_positions
        self.mlp_ratio = mlp_ratio
        self.cms_periods = list(cms_periods)
        self.num_experts = num_experts
        self.expert_rank = expert_rank
        self.expert_top_k = expert_top_k  # 0: every unlocked expert is used (exactly function-preserving expansion)
        self.short_term = short_term
        self.short_term_options = dict(short_term_options or {})
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention that ignores padded keys (left padding)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"learner.model.dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        batch, time, dim = x.shape
        q, k, v = self.qkv(x).view(batch, time, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        causal = torch.ones(time, time, dtype=torch.bool, device=x.device).tril()
        allowed = causal & attention_mask.bool()[:, None, None, :]
        allowed = allowed | torch.eye(time, dtype=torch.bool, device=x.device)  # a pad query still sees itself
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return self.out(y.transpose(1, 2).reshape(batch, time, dim))


class KernelMixer(nn.Module):
    """A registered memory layer (`Cls(dim, num_heads, **opts)`, `forward(x, state) -> (y, state)`) as a mixer.

    Padded positions are zeroed before the layer so left padding writes nothing into its state.
    """

    def __init__(self, name: str, dim: int, num_heads: int, options: dict):
        super().__init__()
        self.layer = KERNELS.get(name)(dim, num_heads, **options)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        y, _ = self.layer(x * attention_mask[..., None].to(x.dtype), None)
        return y


class ShortTermLayer(nn.Module):
    def __init__(self, config: SleepLMConfig):
        super().__init__()
        self.norm = nn.LayerNorm(config.dim)
        if config.short_term == "attention":
            self.mixer: nn.Module = CausalSelfAttention(config.dim, config.num_heads)
        else:
            self.mixer = KernelMixer(config.short_term, config.dim, config.num_heads, config.short_term_options)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return x + self.mixer(self.norm(x), attention_mask)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc_in = nn.Linear(dim, hidden)
        self.fc_out = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(F.gelu(self.fc_in(x)))


class LowRankExpert(nn.Module):
    """x -> up(gelu(down(x))) with down: d x r, up: r x d; `gate` is this expert's router row."""

    def __init__(self, dim: int, rank: int):
        super().__init__()
        self.down = nn.Linear(dim, rank, bias=False)
        self.up = nn.Linear(rank, dim, bias=False)
        self.gate = nn.Linear(dim, 1)
        self.reset()

    def reset(self) -> None:
        """Fresh expert: random `down` and router row, zero `up`, so its output starts at exactly zero."""
        nn.init.normal_(self.down.weight, std=1.0 / math.sqrt(self.down.in_features))
        nn.init.zeros_(self.up.weight)
        nn.init.normal_(self.gate.weight, std=0.02)
        nn.init.zeros_(self.gate.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(F.gelu(self.down(x)))


class CMSBlock(nn.Module):
    """One CMS level: x + mlp(norm x) + sum_e mask_e * topk_e * sigmoid(gate_e(norm x)) * expert_e(norm x).

    While dreaming, `novelty_expert`'s gate is forced to 1 (see SleepLM.novelty_routing).
    """

    def __init__(self, config: SleepLMConfig):
        super().__init__()
        self.top_k = config.expert_top_k
        self.norm = nn.LayerNorm(config.dim)
        self.mlp = FeedForward(config.dim, config.mlp_ratio * config.dim)
        self.experts = nn.ModuleList(LowRankExpert(config.dim, config.expert_rank) for _ in range(config.num_experts))
        self.register_buffer("expert_mask", torch.zeros(config.num_experts))
        self.novelty_expert: int | None = None  # set only while dreaming (SleepLM.novelty_routing)

    def unlocked(self) -> list[int]:
        return [e for e in range(len(self.experts)) if self.expert_mask[e] > 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        out = x + self.mlp(h)
        active = self.unlocked()  # locked experts are never computed: their contribution is exactly zero
        if not active:
            return out
        gates = torch.cat([torch.sigmoid(self.experts[e].gate(h)) for e in active], dim=-1)
        if 0 < self.top_k < len(active):
            keep = torch.zeros_like(gates).scatter(-1, gates.topk(self.top_k, dim=-1).indices, 1.0)
            gates = gates * keep
        if self.novelty_expert in active:  # dreaming: the router also sends every token fully to this expert
            gates = gates.clone()
            gates[..., active.index(self.novelty_expert)] = 1.0
        for slot, e in enumerate(active):
            out = out + gates[..., slot : slot + 1] * self.experts[e](h)
        return out


class SleepLMBackbone(nn.Module):
    """Everything but the LM head; returns the final normalised hidden states."""

    def __init__(self, config: SleepLMConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.dim)
        self.position = nn.Embedding(config.max_positions, config.dim)
        self.layers = nn.ModuleList(ShortTermLayer(config) for _ in range(config.num_layers))
        self.cms = nn.ModuleList(CMSBlock(config) for _ in config.cms_periods)
        self.norm = nn.LayerNorm(config.dim)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: object) -> BaseModelOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # left padding: real tokens start at 0
        if int(positions.max()) >= self.config.max_positions:
            raise ValueError(f"sequence of {int(positions.max()) + 1} tokens exceeds max_positions={self.config.max_positions}")
        x = self.embed(input_ids) + self.position(positions)
        for layer in self.layers:
            x = layer(x, attention_mask)
        for block in self.cms:
            x = block(x)
        return BaseModelOutput(last_hidden_state=self.norm(x))


class SleepLM(PreTrainedModel, GenerationMixin):
    """The sleep learner's language model; works with TRL trainers and saves with safetensors.

    Hugging Face layout (TRL's GRPO calls the backbone `model` and the head `lm_head` itself).
    """

    config_class = SleepLMConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"

    def __init__(self, config: SleepLMConfig):
        super().__init__(config)
        self.model = SleepLMBackbone(config)
        self.lm_head = nn.Linear(config.dim, config.vocab_size, bias=False)
        self.post_init()
        for block in self.cms:  # after the generic init: experts need their zero `up` (function-preserving)
            for expert in block.experts:
                expert.reset()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # no KV cache (see prepare_inputs_for_generation)

    @property
    def cms(self) -> nn.ModuleList:
        return self.model.cms

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        logits_to_keep: int = 0,
        **_: object,
    ) -> CausalLMOutput:
        """Logits for every position (or the last `logits_to_keep`); `labels` (-100 = ignore) gives the shifted loss."""
        hidden = self.model(input_ids, attention_mask).last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=-100)
        return CausalLMOutput(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        """No KV cache: every generation step re-reads the whole sequence (cheap at this size)."""
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    # -- sleep plumbing -------------------------------------------------------------
    def unlock_expert(self, block: int) -> int | None:
        """Unlock the first locked expert of CMS block `block` (fresh, output zero); None when it is full."""
        cms = self.cms[block]
        for e in range(len(cms.experts)):
            if cms.expert_mask[e] == 0:
                cms.experts[e].reset()
                cms.expert_mask[e] = 1.0
                return e
        return None

    @contextmanager
    def novelty_routing(self, generator: torch.Generator) -> Iterator[None]:
        """While active, each CMS block also routes every token fully (gate 1) to one random unlocked expert.

        The paper's dreaming novelty; blocks with no unlocked expert are unchanged.
        """
        for block in self.cms:
            unlocked = block.unlocked()
            if unlocked:
                block.novelty_expert = unlocked[int(torch.randint(len(unlocked), (1,), generator=generator))]
        try:
            yield
        finally:
            for block in self.cms:
                block.novelty_expert = None

    def reset_experts(self, block: int) -> int:
        """Lock and re-initialise every unlocked expert of `block` (synaptic pruning); returns how many."""
        cms = self.cms[block]
        count = 0
        for e in cms.unlocked():
            cms.experts[e].reset()
            cms.expert_mask[e] = 0.0
            count += 1
        return count
