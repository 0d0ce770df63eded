"""`somna bench recall`: multi-query associative recall accuracy per registered memory layer.

For every name in the kernel registry that satisfies the layer contract
(`Cls(dim, num_heads=...)`, `forward(x (B, T, dim), state=None) -> (y, state)`),
a tiny model is trained from scratch on CPU on MQAR sequences with a mix of
loads, then scored on held-out sequences at each load (number of key-value
pairs). Model: token embedding -> token shift (each position sees its own and
the previous token's embedding, so a value token can write under its key) ->
the memory layer, residual -> MLP -> vocabulary. The memory layer is the only
place where information moves across more than one position, so the accuracy
measures what the layer memorises.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

import somna.kernels  # noqa: F401  (registers the layers)
from somna.curricula.mqar import MQARBatch, make_mqar
from somna.platform.registry import KERNELS


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


FULL = RecallSettings()
QUICK = replace(FULL, loads=(4, 16), steps=250, batch_size=16, eval_examples=128)  # learns, but too short to rank


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
    """Train and score every contract-satisfying registered layer; return the markdown table.

    Runs torch on one thread: for models this small, more threads mostly add synchronisation.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(QUICK if quick else FULL, quick)
    finally:
        torch.set_num_threads(threads)


def _run(settings: RecallSettings, quick: bool) -> str:
    test_sets = {load: make_mqar(settings.eval_examples, load, vocab_size=settings.vocab_size,
                                 seed=10_000 + load) for load in settings.loads}
    results, notes = {}, []
    for name in KERNELS.names():
        problem = contract_problem(KERNELS.get(name), settings)
        if problem:
            notes.append(f"- `{name}` skipped: {problem}")
            continue
        start = time.process_time()
        try:
            model = train(KERNELS.get(name), settings)
        except TrainingDiverged as error:
            notes.append(f"- `{name}` diverged: {error}")
            continue
        accuracies = {load: recall_accuracy(model, batch) for load, batch in test_sets.items()}
        results[name] = (accuracies, time.process_time() - start)
        print(f"recall bench: {name} done ({results[name][1]:.0f} CPU s)", file=sys.stderr, flush=True)
    return _table(results, notes, settings, quick)


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
        batch = make_mqar(settings.batch_size, load, vocab_size=settings.vocab_size, seed=settings.seed * 1_000_003 + step)
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


def _table(results: dict, notes: list[str], settings: RecallSettings, quick: bool) -> str:
    loads = settings.loads
    lines = [
        f"### MQAR recall accuracy vs number of key-value pairs ({'quick' if quick else 'full'})",
        "",
        f"vocab {settings.vocab_size} (keys: lower half, values: upper half), layer dim {2 * settings.embed_dim}, "
        f"{settings.num_heads} heads, {settings.steps} AdamW steps of {settings.batch_size} sequences "
        f"(loads cycled), {settings.eval_examples} held-out sequences per load, seed {settings.seed}; "
        f"chance = 1/{settings.vocab_size - settings.vocab_size // 2}.",
        "",
        "| kernel | " + " | ".join(f"{load} pairs" for load in loads) + " | train CPU s |",
        "|---|" + "---:|" * (len(loads) + 1),
    ]
    for name, (accuracies, seconds) in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{accuracies[load]:.3f}" for load in loads) + f" | {seconds:.0f} |")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)
