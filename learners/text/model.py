"""somna's own base language model: a small pre-norm decoder whose mixers can be any registered memory kernel.

Architecture (PAPERS.md, "Language Models Need Sleep"): token embeddings -> `num_layers` layers,
each a short-term mixer (causal attention with rotary positions, or a memory layer registered in
`somna.platform.registry.KERNELS`, which reads the order itself) followed by an MLP -> norm -> LM
head. Rotary positions (RoPE, Su et al. 2021) make attention depend on relative offsets, which is
what reading needs: the value right after "lives in", wherever the sentence is; with learned
absolute positions the same model took about twice the tokens to learn to read. `somna pretrain` trains
it on the generated world; a text learner then turns the MLPs of its last layers into the
Continuum Memory System's levels, each with masked low-rank experts (learners/text/experts.py) —
the same wrapping it gives the MLPs of any Hugging Face causal LM.

Stable module names (PEFT LoRA may target them), Hugging Face layout:
  model.embed, model.layers.{i}.mixer_norm, model.layers.{i}.mixer (attention:
  .qkv, .out), model.layers.{i}.mlp_norm, model.layers.{i}.mlp.fc_in / .fc_out, model.norm, lm_head.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._pytree import tree_map_only
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutput

from somna.platform.registry import KERNELS


@dataclass
class Architecture:
    """The sizes of a SleepLM (`somna pretrain`'s `model` keys)."""

    dim: int = 128  # width of the residual stream
    num_heads: int = 4  # attention (or kernel) heads
    num_layers: int = 4  # mixer + MLP layers
    max_positions: int = 128  # the longest sequence
    rope_base: float = 10000.0  # rotary position frequency base
    mlp_ratio: int = 4  # MLP hidden width / dim
    short_term: str = "attention"  # the mixer: attention, or the name of a registered kernel layer (`somna kernels`)
    short_term_options: dict = field(default_factory=dict)  # keyword options of that kernel layer


class SleepLMConfig(PretrainedConfig):
    """An `Architecture` plus the vocabulary; `hidden_size` & co. are the names generic code reads."""

    model_type = "somna-sleep-lm"
    attribute_map = {"hidden_size": "dim", "num_hidden_layers": "num_layers", "max_position_embeddings": "max_positions"}

    def __init__(self, vocab_size: int = 512, pad_token_id: int = 0, bos_token_id: int = 1, eos_token_id: int = 2, **kwargs):
        defaults = Architecture()
        for spec in fields(Architecture):
            setattr(self, spec.name, kwargs.pop(spec.name, getattr(defaults, spec.name)))
        self.short_term_options = dict(self.short_term_options or {})
        self.vocab_size = vocab_size
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)


def rotate(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """RoPE: rotate each pair (x_i, x_{i+d/2}) of every head by position * base^(-2i/d); x: (B, H, T, d)."""
    half = x.size(-1) // 2
    frequencies = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = positions[:, None, :, None].float() * frequencies  # (B, 1, T, d/2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    first, second = x[..., :half], x[..., half:]
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention with rotary positions that ignores padded keys (left or right padding)."""

    def __init__(self, dim: int, num_heads: int, rope_base: float):
        super().__init__()
        if dim % num_heads or (dim // num_heads) % 2:
            raise ValueError(f"model.dim ({dim}) must be divisible by model.num_heads ({num_heads}) into heads of even width")
        self.num_heads = num_heads
        self.rope_base = rope_base
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        batch, time, dim = x.shape
        q, k, v = self.qkv(x).view(batch, time, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k = rotate(q, positions, self.rope_base), rotate(k, positions, self.rope_base)
        causal = torch.ones(time, time, dtype=torch.bool, device=x.device).tril()
        allowed = causal & attention_mask.bool()[:, None, None, :]
        allowed = allowed | torch.eye(time, dtype=torch.bool, device=x.device)  # a pad query still sees itself
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return self.out(y.transpose(1, 2).reshape(batch, time, dim))


def broadcast_batch(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    """A carried state's leaf for one sequence, repeated over `batch` (0-dim leaves, e.g. a position count, are shared)."""
    return tensor if tensor.dim() == 0 else tensor.expand(batch, *tensor.shape[1:]).contiguous()


class KernelMixer(nn.Module):
    """A registered memory layer (`Cls(dim, num_heads, **opts)`, `forward(x, state) -> (y, state)`) as a mixer.

    Padded positions are zeroed before the layer so padding writes nothing into its state. `memory`
    is a carried state (the text sleep learner's `kernel` fast memory): when set, every sequence
    starts from it instead of an empty state, as if it had read what wrote the memory first.
    While `writing`, a forward (one sequence) leaves the state it ends with in `memory`, so
    consecutive documents chain. A plain attribute, not a buffer: it is no weight, stays out of
    checkpoints and state dicts, and a deepcopy (a sleep's teacher) keeps it.
    """

    def __init__(self, name: str, dim: int, num_heads: int, options: dict):
        super().__init__()
        self.layer = KERNELS.get(name)(dim, num_heads, **options)
        self.dim = dim
        self.memory: Any = None
        self.writing = False

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        start = None if self.memory is None else tree_map_only(torch.Tensor, lambda t: broadcast_batch(t, x.size(0)), self.memory)
        y, state = self.layer(x * attention_mask[..., None].to(x.dtype), start)
        if self.writing:
            if x.size(0) != 1:
                raise ValueError(f"a kernel memory is written one sequence at a time, got a batch of {x.size(0)}")
            self.memory = tree_map_only(torch.Tensor, torch.Tensor.detach, state)
        return y


@contextmanager
def writing(mixers: Iterable[KernelMixer]) -> Iterator[None]:
    """While inside, each forward of one sequence leaves its final state in the `mixers`' `memory`."""
    mixers = list(mixers)
    for mixer in mixers:
        mixer.writing = True
    try:
        yield
    finally:
        for mixer in mixers:
            mixer.writing = False


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc_in = nn.Linear(dim, hidden)
        self.fc_out = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(F.gelu(self.fc_in(x)))


class DecoderLayer(nn.Module):
    """x + mixer(norm x), then x + mlp(norm x) (pre-norm)."""

    def __init__(self, config: SleepLMConfig):
        super().__init__()
        self.mixer_norm = nn.LayerNorm(config.dim)
        if config.short_term == "attention":
            self.mixer: nn.Module = CausalSelfAttention(config.dim, config.num_heads, config.rope_base)
        else:
            self.mixer = KernelMixer(config.short_term, config.dim, config.num_heads, config.short_term_options)
        self.mlp_norm = nn.LayerNorm(config.dim)
        self.mlp: nn.Module = FeedForward(config.dim, config.mlp_ratio * config.dim)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.mixer_norm(x), attention_mask, positions)
        return x + self.mlp(self.mlp_norm(x))


class SleepLMBackbone(nn.Module):
    """Everything but the LM head; returns the final normalised hidden states."""

    def __init__(self, config: SleepLMConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(config.dim)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: object) -> BaseModelOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # left padding: real tokens start at 0
        if int(positions.max()) >= self.config.max_positions:
            raise ValueError(f"sequence of {int(positions.max()) + 1} tokens exceeds max_positions={self.config.max_positions}")
        x = self.embed(input_ids)
        for layer in self.layers:
            x = layer(x, attention_mask, positions)
        return BaseModelOutput(last_hidden_state=self.norm(x))


class SleepLM(PreTrainedModel, GenerationMixin):
    """somna's base LM; works with TRL trainers and saves with safetensors.

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

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # no KV cache (see prepare_inputs_for_generation)

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
