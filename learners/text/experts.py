"""The Continuum Memory System of a text learner: the MLPs of a base's last layers, each with masked low-rank experts.

PAPERS.md, "Language Models Need Sleep": the CMS is a chain of MLP blocks ordered by update
period C(l); each is a mixture of experts behind a router, with parameters pre-allocated and
masked until a sleep unlocks them. `attach_cms` builds it on any causal LM: the MLPs (modules
named `mlp`) of the base's last `levels` layers become levels 0..levels-1 in depth order, each
wrapped as

    ExpertMLP(x) = mlp(x) + sum_e mask_e * topk_e * sigmoid(gate_e(x)) * up_e(gelu(down_e(x)))

with `num_experts` rank-r experts (down: d x r, up: r x d). Experts start locked (mask 0) and are
never computed, so a wrapped model computes exactly what its base did; a sleep unlocks one
(`ExpertMLP.unlock`), and since `up` starts at zero and the router is a sigmoid (not a softmax
over experts), unlocking changes no logit until the expert is trained: expansion is
function-preserving. somna's SleepLM and a Hugging Face model (Llama, GPT-2, Qwen: any whose
decoder layers call their MLP `mlp`) get the same wrapping.

Keyed gate (`keys` > 0; GRACE's codebook of edit keys, read as a gate): each expert also keeps up to
`keys` keys, the level's inputs at the positions a sleep trained it on, and acts only where the input's
largest cosine similarity to one of its keys is at least `key_threshold`:

    gate_e(x) = sigmoid(router_e(x)) * [max_j cos(q(x), key_ej) >= key_threshold]

A linear router row learned the form of the text more than which facts are new (docs/lm_results.md,
"A gate keyed on what the sleep was taught"); the keys tell new inputs from old ones. An expert with no
keys stored is gated by its router alone. The query q(x) at a position is the level's input there, or with
`key_window` W > 1 the sum of the unit inputs at it and the W - 1 real tokens before it; keys are stored
as queries. At an answer position the input holds the question's form more than whom it asks about, and a
window lets the tokens just before it count (docs/lm_results.md, "Keys over a window"). A window needs the
whole sequence in every forward pass: `attach_cms` hands each level the padding mask and turns the base's
generation KV cache off.

Module names: <layer>.mlp.base (the original MLP), <layer>.mlp.experts.{e}.down / .up / .gate;
buffer <layer>.mlp.expert_mask: (num_experts,), 1.0 = unlocked; with keys, buffers <layer>.mlp.expert_keys
(num_experts, keys, dim), unit rows, and <layer>.mlp.key_counts (num_experts,), how many rows are stored.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


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


class ExpertMLP(nn.Module):
    """One CMS level: a base MLP plus its masked low-rank experts (see the module docstring).

    While dreaming, `novelty_expert`'s gate is forced to 1 (see `novelty_routing`)."""

    def __init__(
        self, base: nn.Module, dim: int, num_experts: int, rank: int, top_k: int = 0, keys: int = 0, key_threshold: float = 0.95,
        key_window: int = 1,
    ):
        super().__init__()
        self.base = base
        self.top_k = top_k  # 0: every unlocked expert is used (exactly function-preserving expansion)
        reference = next(base.parameters())
        self.experts = nn.ModuleList(LowRankExpert(dim, rank) for _ in range(num_experts)).to(reference.device, reference.dtype)
        self.register_buffer("expert_mask", torch.zeros(num_experts, device=reference.device))
        self.key_threshold = key_threshold
        self.key_window = key_window
        self.padding: torch.Tensor | None = None  # (batch, seq) 1 = real token, of the pass in progress (`attach_cms`)
        self.register_buffer("expert_keys", torch.zeros(num_experts, keys, dim, device=reference.device, dtype=reference.dtype) if keys else None)
        self.register_buffer("key_counts", torch.zeros(num_experts, dtype=torch.long, device=reference.device) if keys else None)
        self.novelty_expert: int | None = None

    def unlocked(self) -> list[int]:
        return [e for e in range(len(self.experts)) if self.expert_mask[e] > 0]

    def unlock(self) -> int | None:
        """Unlock the first locked expert (fresh, output zero) and return it; None when none is left."""
        for e in range(len(self.experts)):
            if self.expert_mask[e] == 0:
                self.reset_expert(e)
                self.expert_mask[e] = 1.0
                return e
        return None

    def reset_expert(self, e: int) -> None:
        """Expert `e` as new: fresh weights (output zero) and no keys."""
        self.experts[e].reset()
        if self.expert_keys is not None:
            self.expert_keys[e].zero_()
            self.key_counts[e] = 0

    def store_keys(self, e: int, queries: torch.Tensor, generator: torch.Generator) -> int:
        """Keep `queries` (positions, dim), the level's key queries where expert `e` is taught, as its keys (unit
        rows); beyond the bank's size, a seeded choice of them. Returns how many are stored."""
        capacity = self.expert_keys.shape[1]
        if len(queries) > capacity:
            queries = queries[torch.randperm(len(queries), generator=generator)[:capacity]]
        self.expert_keys[e].zero_()
        if len(queries):
            self.expert_keys[e, : len(queries)] = F.normalize(queries.to(self.expert_keys), dim=-1)
        self.key_counts[e] = len(queries)
        return len(queries)

    def key_queries(self, x: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, seq, dim) unit queries of the level's input `x`: at each position, the sum of the unit inputs at
        it and the `key_window` - 1 positions before it, padding (0 in `padding`, (batch, seq)) left out."""
        units = F.normalize(x, dim=-1)
        if self.key_window == 1:
            return units
        if padding is not None:
            units = units * padding[..., None].to(units.dtype)
        window = sum(F.pad(units, (0, 0, shift, 0))[:, : units.shape[1]] for shift in range(self.key_window))
        return F.normalize(window, dim=-1)

    def key_similarity(self, e: int, queries: torch.Tensor) -> torch.Tensor:
        """(..., ) the largest cosine similarity of each of `queries` (unit rows, `key_queries`) to a key of expert `e`."""
        keys = self.expert_keys[e, : int(self.key_counts[e])]
        return (queries @ keys.T).amax(dim=-1)

    def keyed(self, e: int) -> bool:
        return self.expert_keys is not None and int(self.key_counts[e]) > 0

    def key_gate(self, e: int, queries: torch.Tensor) -> torch.Tensor:
        """(..., 1): 1 where expert `e` may act (its key queries near one of its keys, or it has none), else 0."""
        if not self.keyed(e):
            return torch.ones_like(queries[..., :1])
        return (self.key_similarity(e, queries) >= self.key_threshold).to(queries.dtype).unsqueeze(-1)

    def expert_gate(self, e: int, x: torch.Tensor, queries: torch.Tensor | None) -> torch.Tensor:
        """(..., 1): expert `e`'s gate on `x`, its router's sigmoid, times its key gate on `queries` when it has keys."""
        gate = torch.sigmoid(self.experts[e].gate(x))
        return gate * self.key_gate(e, queries) if self.keyed(e) else gate

    def mask_experts(self) -> None:
        """Mask every expert, weights kept: the level computes its base MLP alone (a sleep teacher that reads
        with the base's own skill, `learner.teacher_experts=false`)."""
        self.expert_mask.zero_()

    def reset_experts(self) -> int:
        """Lock and re-initialise every unlocked expert (synaptic pruning); returns how many."""
        unlocked = self.unlocked()
        for e in unlocked:
            self.reset_expert(e)
            self.expert_mask[e] = 0.0
        return len(unlocked)

    def forward_queries(self, x: torch.Tensor) -> torch.Tensor:
        """`key_queries` of this pass's input, with the padding mask `attach_cms` recorded for it."""
        if self.key_window > 1 and self.padding is not None and self.padding.shape != x.shape[:2]:
            raise RuntimeError(
                f"a keyed gate with key_window {self.key_window} reads the whole sequence in every forward pass, but this "
                f"pass has {x.shape[1]} positions and its attention mask {self.padding.shape[1]}: call the model without a KV cache"
            )
        return self.key_queries(x, self.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        active = self.unlocked()  # locked experts are never computed: their contribution is exactly zero
        if not active:
            return out
        queries = self.forward_queries(x) if any(self.keyed(e) for e in active) else None
        gates = torch.cat([self.expert_gate(e, x, queries) for e in active], dim=-1)
        if 0 < self.top_k < len(active):
            keep = torch.zeros_like(gates).scatter(-1, gates.topk(self.top_k, dim=-1).indices, 1.0)
            gates = gates * keep
        if self.novelty_expert in active:  # dreaming: the router also sends every token fully to this expert
            gates = gates.clone()
            gates[..., active.index(self.novelty_expert)] = 1.0
        for slot, e in enumerate(active):
            out = out + gates[..., slot : slot + 1] * self.experts[e](x)
        return out


def hidden_size(model: nn.Module) -> int:
    """The width of the model's residual stream (the input and output size of its MLPs)."""
    config = model.config
    for key in ("hidden_size", "n_embd", "d_model"):
        if isinstance(getattr(config, key, None), int):
            return getattr(config, key)
    raise ValueError(f"learner.model.base: cannot tell the hidden size of {type(model).__name__} from its config")


def attach_cms(
    model: nn.Module, levels: int, num_experts: int, rank: int, top_k: int = 0, keys: int = 0, key_threshold: float = 0.95,
    key_window: int = 1,
) -> list[ExpertMLP]:
    """Wrap the MLPs of the model's last `levels` layers as CMS levels (in place); returns them, level 0 first.
    `keys` > 0 gives every expert a keyed gate of that many keys, its queries summed over `key_window` tokens
    (see the module docstring)."""
    mlps = [name for name, _ in model.named_modules() if name.rsplit(".", 1)[-1] == "mlp"]
    if len(mlps) < levels:
        raise ValueError(
            f"learner.model.cms_periods has {levels} levels but the base ({type(model).__name__}) has {len(mlps)} "
            f"MLP layers to put them on; use at most {len(mlps)} periods"
        )
    dim = hidden_size(model)
    for name in mlps[len(mlps) - levels :]:
        parent, _, attribute = name.rpartition(".")
        holder = model.get_submodule(parent) if parent else model
        setattr(holder, attribute, ExpertMLP(getattr(holder, attribute), dim, num_experts, rank, top_k, keys, key_threshold, key_window))
    if keys and key_window > 1:
        model.register_forward_pre_hook(record_padding, with_kwargs=True)
        model.register_forward_hook(forget_padding)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.use_cache = False  # a cached step would show the levels one position of the window
    return cms_blocks(model)


def record_padding(model: nn.Module, args: tuple, kwargs: dict) -> None:
    """Forward pre-hook: give each CMS level the pass's attention mask, so key windows skip the padding."""
    mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
    for block in cms_blocks(model):
        block.padding = mask


def forget_padding(model: nn.Module, _args: tuple, _output: object) -> None:
    """Forward hook: the mask belongs to the finished pass only."""
    for block in cms_blocks(model):
        block.padding = None


def cms_blocks(model: nn.Module) -> list[ExpertMLP]:
    """The CMS levels of a model `attach_cms` wrapped, level 0 (the fastest) first."""
    return [module for module in model.modules() if isinstance(module, ExpertMLP)]


@contextmanager
def recorded_outputs(module: nn.Module) -> Iterator[list[torch.Tensor]]:
    """While active, collects the module's output of every forward pass, in order.

    Knowledge seeding reads its new expert's router logits this way (`LowRankExpert.gate`), to train
    and to log where the router opens without changing how the block computes."""
    outputs: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _module, _inputs, output: outputs.append(output))
    try:
        yield outputs
    finally:
        handle.remove()


@contextmanager
def novelty_routing(model: nn.Module, generator: torch.Generator) -> Iterator[None]:
    """While active, each CMS level also routes every token fully (gate 1) to one random unlocked expert.

    The paper's dreaming novelty; levels with no unlocked expert are unchanged."""
    blocks = cms_blocks(model)
    for block in blocks:
        unlocked = block.unlocked()
        if unlocked:
            block.novelty_expert = unlocked[int(torch.randint(len(unlocked), (1,), generator=generator))]
    try:
        yield
    finally:
        for block in blocks:
            block.novelty_expert = None
