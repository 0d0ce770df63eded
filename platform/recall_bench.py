"""`somna bench recall`: multi-query associative recall accuracy per registered memory layer, over seeds.

For every name in the kernel registry that satisfies the layer contract
(`Cls(dim, num_heads=...)`, `forward(x (B, T, dim), state=None) -> (y, state)`),
a tiny model is trained from scratch on CPU on MQAR sequences with a mix of
loads, then scored on held-out sequences at each load (number of key-value
pairs), for each of `seeds` (training seed; the held-out sequences are the
same for every seed). Model: token embedding -> token shift (each position
sees its own and the previous token's embedding, so a value token can write
under its key) -> the memory layer, residual -> MLP -> vocabulary. The memory
layer is the only place where information moves across more than one
position, so the accuracy measures what the layer memorises.

A kernel may have a recipe (outer learning rate, steps) in RECIPES; the table
prints it. Recipes come from docs/scripts/recall_recipes.py, which tunes on
the dev split (`dev_sets`) and a training seed the benchmark does not use,
never on the held-out sequences (`test_sets`).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

import somna.kernels.catalog  # noqa: F401  (registers the layers)
from somna.curricula.mqar import MQARBatch, make_mqar
from somna.evals.stats import mean_ci
from somna.platform.provenance import provenance_line
from somna.learners.base import derive_seed
from somna.platform.registry import KERNELS

TEST_SEED, DEV_SEED = 10_000, 20_000  # held-out sequences: TEST_SEED + load; dev (tuning) sequences: DEV_SEED + load


@dataclass(frozen=True)
class RecallSettings:
    """Sizes of one benchmark run. Heads of 16 dims see up to 32 pairs: past 16 the keys cannot all be orthogonal."""

    loads: tuple[int, ...] = (4, 8, 16, 32)
    vocab_size: int = 128
    embed_dim: int = 16  # the layer sees 2 * embed_dim (token + previous token)
    num_heads: int = 2
    steps: int = 600
    batch_size: int = 32
    learning_rate: float = 1e-2
    eval_examples: int = 256
    seed: int = 0
    seeds: tuple[int, ...] = (0, 1, 2)


@dataclass(frozen=True)
class Recipe:
    """A kernel's outer-loop training recipe, when the shared default does not suit it."""

    learning_rate: float
    steps: int


FULL = RecallSettings()
QUICK = replace(FULL, loads=(4, 16), steps=250, batch_size=16, eval_examples=128, seeds=(0,))  # learns, too short to rank

# From docs/scripts/recall_recipes.py (dev split, training seed 100; its log is in docs/bench_recall.md).
RECIPES: dict[str, Recipe] = {
    "self-modifying": Recipe(0.01, 1200),
    "moneta": Recipe(0.01, 1200),
    "atlas": Recipe(0.01, 1200),
}

NOTES = {  # what each kernel is and what to read into its row
    "linear-attention": "S += kᵀv: no erasure, so keys interfere once they outnumber the head's 16 dims.",
    "deltanet": "delta rule: overwrites what a key held; best at high load here.",
    "gated-deltanet": "delta rule + forget gate; MQAR never needs forgetting, which costs a little.",
    "titans": "depth-2 MLP memory, momentum, forget gate, chunk 16.",
    "atlas": "Omega rule over the last 8 tokens (OmegaNet: no Muon by default).",
    "moneta": "ℓ3 bias, ℓ4-normalised memory; needs 1200 outer steps.",
    "yaad": "Huber bias, δ starting at 10 (above the typical ‖v − M(k)‖ ≈ 2.3, so writes start as ℓ2).",
    "memora": "KL retention: softmax-normalised rows, gain √d_in, uniform row subtracted.",
    "cms": "associative CMS blocks at periods 8/32/128; MQAR's pairs end on a multiple of 8 tokens, "
    "so block 1 has written them all before the first query — a favourable alignment (see docs).",
    "self-modifying": "k, v, η, α from their own memories, each reading its own projection of x.",
    "hope": "identity-initialised conv → self-modifying memory → CMS; the recall comes mostly from the CMS "
    "(without it: 0.30 at 4 pairs, see docs).",
    "titans-mac": "memory as context, writing the segment's input (writing the attention output, as the paper: 0.017).",
    "titans-mag": "memory as gate over sliding-window attention (window 16).",
    "titans-mal": "memory layer, then sliding-window attention (window 16).",
}


class RecallModel(nn.Module):
    """Embedding -> token shift -> one memory layer (residual) -> MLP -> vocabulary logits."""

    def __init__(self, layer_cls: type[nn.Module], settings: RecallSettings):
        super().__init__()
        dim = 2 * settings.embed_dim
        self.embedding = nn.Embedding(settings.vocab_size, settings.embed_dim)
        self.memory = layer_cls(dim, num_heads=settings.num_heads)
        self.norm = nn.LayerNorm(dim)
        self.readout = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, settings.vocab_size))

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits at the (B, T) boolean `positions` only (the queries): the readout dominates the cost otherwise."""
        embedded = self.embedding(tokens)
        previous = F.pad(embedded, (0, 0, 1, 0))[:, :-1]
        x = torch.cat([embedded, previous], dim=-1)
        y, _ = self.memory(x)
        return self.readout(self.norm(x + y)[positions])


def run(quick: bool = False) -> str:
    """Train and score every contract-satisfying registered layer over the seeds; return the markdown table.

    Runs torch on one thread: for models this small, more threads mostly add synchronisation.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(QUICK if quick else FULL, quick)
    finally:
        torch.set_num_threads(threads)


def test_sets(settings: RecallSettings) -> dict[int, MQARBatch]:
    """The held-out sequences every score in the table is measured on."""
    return {load: make_mqar(settings.eval_examples, load, vocab_size=settings.vocab_size, seed=TEST_SEED + load) for load in settings.loads}


def dev_sets(settings: RecallSettings) -> dict[int, MQARBatch]:
    """Sequences for tuning recipes (never the held-out ones)."""
    return {load: make_mqar(settings.eval_examples, load, vocab_size=settings.vocab_size, seed=DEV_SEED + load) for load in settings.loads}


def with_recipe(name: str, settings: RecallSettings) -> RecallSettings:
    recipe = RECIPES.get(name)
    return settings if recipe is None else replace(settings, learning_rate=recipe.learning_rate, steps=recipe.steps)


def _run(settings: RecallSettings, quick: bool) -> str:
    origin = provenance_line()  # the code and machine at the start: later edits must not relabel this run
    held_out = test_sets(settings)
    results, notes = {}, []
    for name in KERNELS.names():
        problem = contract_problem(KERNELS.get(name), settings)
        if problem:
            notes.append(f"- `{name}` skipped: {problem}")
            continue
        kernel_settings = with_recipe(name, settings)
        scores, seconds, failures = {load: [] for load in settings.loads}, [], []
        for seed in settings.seeds:
            start = time.process_time()
            try:
                model = train(KERNELS.get(name), replace(kernel_settings, seed=seed))
            except TrainingDiverged as error:
                failures.append(f"seed {seed}: {error}")
                continue
            for load, batch in held_out.items():
                scores[load].append(recall_accuracy(model, batch))
            seconds.append(time.process_time() - start)
            print(f"recall bench: {name} seed {seed} done ({seconds[-1]:.0f} CPU s)", file=sys.stderr, flush=True)
        if failures:
            notes.append(f"- `{name}` diverged ({'; '.join(failures)})")
        if seconds:
            results[name] = (scores, sum(seconds) / len(seconds), kernel_settings)
    return _table(results, notes, settings, quick, origin)


def contract_problem(layer_cls: object, settings: RecallSettings) -> str | None:
    """Why `layer_cls` does not satisfy the layer contract, or None when it does."""
    dim = 2 * settings.embed_dim
    try:
        torch.manual_seed(settings.seed)
        layer = layer_cls(dim, num_heads=settings.num_heads)
        x = torch.randn(2, 5, dim)
        output = layer(x)
        if not (isinstance(output, tuple) and len(output) == 2 and output[0].shape == x.shape):
            return "forward(x) must return (y of x's shape, state)"
        y_first, state = layer(x[:, :3])
        y_rest, _ = layer(x[:, 3:], state)
        if not torch.allclose(torch.cat([y_first, y_rest], dim=1), output[0], atol=1e-4, rtol=1e-3):
            return "running in two pieces with the state differs from one call"
    except Exception as error:  # any failure means: not a layer of this contract
        return f"{type(error).__name__}: {error}".splitlines()[0]
    return None


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite (reported in the table's notes instead of a score)."""


def train(layer_cls: type[nn.Module], settings: RecallSettings) -> RecallModel:
    """Train from scratch; each step draws a batch at one load, cycling through the loads."""
    torch.manual_seed(settings.seed)
    model = RecallModel(layer_cls, settings)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.learning_rate, total_steps=settings.steps)
    for step in range(settings.steps):
        load = settings.loads[step % len(settings.loads)]
        batch = make_mqar(settings.batch_size, load, vocab_size=settings.vocab_size, seed=derive_seed(settings.seed, salt=step))
        loss = F.cross_entropy(model(batch.inputs, batch.query_mask), batch.targets[batch.query_mask])
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"non-finite loss at step {step} of {settings.steps} (learning rate {settings.learning_rate})")
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    return model


@torch.no_grad()
def recall_accuracy(model: RecallModel, batch: MQARBatch) -> float:
    """Fraction of query positions whose arg-max prediction is the paired value."""
    predictions = model(batch.inputs, batch.query_mask).argmax(dim=-1)
    return (predictions == batch.targets[batch.query_mask]).float().mean().item()


def _table(results: dict, notes: list[str], settings: RecallSettings, quick: bool, origin: str) -> str:
    loads = settings.loads
    lines = [
        f"### MQAR recall accuracy vs number of key-value pairs ({'quick' if quick else 'full'})",
        "",
        f"vocab {settings.vocab_size} (keys: lower half, values: upper half), layer dim {2 * settings.embed_dim}, "
        f"{settings.num_heads} heads, AdamW (one-cycle) on batches of {settings.batch_size} sequences (loads cycled), "
        f"{settings.eval_examples} held-out sequences per load; mean ± 95% CI (Student t) over training seeds "
        f"{', '.join(map(str, settings.seeds))}; chance = 1/{settings.vocab_size - settings.vocab_size // 2}. "
        f"Default recipe: lr {settings.learning_rate:g}, {settings.steps} steps. {origin}",
        "",
        "| kernel | " + " | ".join(f"{load} pairs" for load in loads) + " | recipe (lr, steps) | train CPU s / seed | note |",
        "|---|" + "---:|" * len(loads) + "---|---:|---|",
    ]
    for name, (scores, seconds, kernel_settings) in results.items():
        cells = [mean_ci(scores[load]).format() for load in loads]
        recipe = f"{kernel_settings.learning_rate:g}, {kernel_settings.steps}" + ("" if name in RECIPES else " (default)")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {recipe} | {seconds:.0f} | {NOTES.get(name, '')} |")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)
