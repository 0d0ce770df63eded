"""Benchmark: Titans NeuralMemory inner loop, chunkwise-parallel vs a naive per-token autograd loop.

Both run the same inner loop (depth-2 MLP memory, momentum, forget gate,
data-dependent θ) on random (1, H=4, T, d=64) inputs, forward only, float32,
CPU. The naive loop is what one writes first: per token, autograd for
∇½‖M(k_t) − v_t‖² at the current weights, then the momentum and decay updates
and the read. `somna bench kernels` prints the table;
`python -m somna.kernels.bench_memory --out docs/bench_kernels_memory.md` saves it.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from somna.kernels.neural_memory import Gates, MemoryRule, MemoryState, memory_scan

HEADS, HEAD_DIM, HIDDEN = 4, 64, 128
CHUNK_SIZES = (16, 64)


def _inputs(length: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shape = (1, HEADS, length, HEAD_DIM)
    q, k = (F.normalize(torch.randn(*shape, generator=g), dim=-1) for _ in range(2))
    v = torch.randn(*shape, generator=g)
    gates = Gates(
        lr=0.1 * torch.rand(1, HEADS, length, generator=g),
        momentum=0.5 + 0.4 * torch.rand(1, HEADS, length, generator=g),
        retain=1 - 0.01 * torch.rand(1, HEADS, length, generator=g),
    )
    weights = (
        torch.randn(1, HEADS, HEAD_DIM, HIDDEN, generator=g) / HEAD_DIM**0.5,
        torch.randn(1, HEADS, HIDDEN, HEAD_DIM, generator=g) / HIDDEN**0.5,
    )
    empty = q.new_zeros(1, HEADS, 0, HEAD_DIM)
    state = MemoryState(weights, tuple(torch.zeros_like(w) for w in weights), empty, empty, empty[..., 0])
    return q, k, v, gates, state


def _mlp(weights, x):
    return F.silu(x @ weights[0]) @ weights[1]


def naive_loop(q, k, v, gates: Gates, state: MemoryState) -> torch.Tensor:
    """Token by token: autograd gradient at the current weights, S ← ηS − θ∇, A ← ρA + S, read M_A(q_t)."""
    weights, momentum = list(state.weights), list(state.momentum)
    outputs = []
    for t in range(q.shape[2]):
        leaves = [w.detach().requires_grad_() for w in weights]
        key = k[:, :, t : t + 1]
        with torch.enable_grad():
            loss = 0.5 * (_mlp(leaves, key) - v[:, :, t : t + 1]).pow(2).sum()
            grads = torch.autograd.grad(loss, leaves)
        for layer, grad in enumerate(grads):
            momentum[layer] = gates.momentum[:, :, t, None, None] * momentum[layer] - gates.lr[:, :, t, None, None] * grad
            weights[layer] = gates.retain[:, :, t, None, None] * weights[layer] + momentum[layer]
        outputs.append(_mlp(weights, q[:, :, t : t + 1]))
    return torch.cat(outputs, dim=2)


def _best_time(function, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


LAYERS = (
    "titans", "moneta", "yaad", "memora", "atlas", "cms", "self-modifying", "titans-mac", "titans-mag", "titans-mal", "hope"
)


def run(quick: bool = False) -> str:
    """Markdown tables: NeuralMemory chunkwise vs naive per-token loop, and training cost of each memory layer."""
    lengths = (256, 1024) if quick else (256, 1024, 4096)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: reproducible on a shared machine, and the fair per-core comparison
    try:
        with torch.no_grad():
            rows, agreement = _measure(lengths)
        layer_rows = _measure_layers(length=128 if quick else 256)
    finally:
        torch.set_num_threads(threads)
    return _table(rows, agreement) + "\n\n" + layer_rows


def _measure_layers(length: int, batch: int = 8, dim: int = 64, heads: int = 2) -> str:
    """Forward + backward time of each registered layer of this room's memory family, default options."""
    from somna.platform.registry import KERNELS

    x = torch.randn(batch, length, dim, generator=torch.Generator().manual_seed(0))
    lines = [
        "| layer | fwd+bwd tokens/s | fwd tokens/s |",
        "|---|---:|---:|",
    ]
    for name in LAYERS:
        torch.manual_seed(0)
        layer = KERNELS.get(name)(dim, num_heads=heads)

        def train_step():
            y, _ = layer(x)
            y.pow(2).mean().backward()

        def forward():
            with torch.no_grad():
                layer(x)

        train_s, forward_s = _best_time(train_step, repeats=1), _best_time(forward, repeats=1)
        tokens = batch * length
        lines.append(f"| {name} | {tokens / train_s:,.0f} | {tokens / forward_s:,.0f} |")
    lines += [
        "",
        f"Each layer with its default options, dim {dim}, {heads} heads, batch {batch} × T = {length}, float32, "
        "1 thread, one timed run after construction (what a training step of `somna bench recall` costs).",
    ]
    return "\n".join(lines)


def _measure(lengths: tuple[int, ...]) -> tuple[list[list[str]], float]:
    # Same-semantics check: chunk size 1 is the per-token rule the naive loop runs.
    q, k, v, gates, state = _inputs(64)
    chunk_one = memory_scan(q, k, v, gates, state, MemoryRule(chunk_size=1))[0]
    agreement = (chunk_one - naive_loop(q, k, v, gates, state)).abs().max().item()
    rows = []
    for length in lengths:
        q, k, v, gates, state = _inputs(length)
        naive_s = _best_time(lambda: naive_loop(q, k, v, gates, state), repeats=1)
        row = [f"{length}", f"{length / naive_s:,.0f}"]
        for chunk in CHUNK_SIZES:
            rule = MemoryRule(chunk_size=chunk)
            chunk_s = _best_time(lambda: memory_scan(q, k, v, gates, state, rule), repeats=3 if length <= 1024 else 1)
            row += [f"{length / chunk_s:,.0f}", f"{naive_s / chunk_s:.1f}×"]
        rows.append(row)
    return rows, agreement


def _table(rows: list[list[str]], agreement: float) -> str:
    header = ["T", "naive loop tok/s"]
    for chunk in CHUNK_SIZES:
        header += [f"chunkwise C={chunk} tok/s", f"speed-up C={chunk}"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        f"NeuralMemory inner loop, batch 1, H={HEADS}, d={HEAD_DIM}, depth-2 MLP memory (hidden {HIDDEN}), momentum + "
        f"forget gate, float32, forward only. Chunk size 1 vs naive loop: max |Δ| = {agreement:.1e}. "
        f"Machine: {platform.machine()} {platform.processor() or platform.system()}, {os.cpu_count()} CPUs visible, "
        f"torch {torch.__version__}, 1 thread; chunkwise best of 3 (T = 4096: 1 run), naive 1 run.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args()
    table = run(quick=args.quick)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("# NeuralMemory benchmark (`somna bench kernels`)\n\n" + table + "\n")


if __name__ == "__main__":
    main()
