"""`somna bench kernels` (memory part): the NeuralMemory layer against titans-pytorch, and every memory layer's cost.

Side by side in one process, one torch thread, CPU time (best of a few runs;
see ops_bench.py for why CPU time): somna's `NeuralMemory` and
titans-pytorch's `NeuralMemory` at the same configuration — dim 256, 4 heads
of 64, depth-2 MLP memory with expansion 2 (hidden 128), chunk 64, momentum and
a forget gate — forward (no_grad) and forward + backward. titans-pytorch is
an optional dependency (`pip install somna[bench]`); without it that column
is skipped with a note. The two do not compute the same thing: somna reads
every token with the memory after that token's write (Titans eq. 16–18),
titans-pytorch reads a chunk with the memory at the chunk's start and averages
the chunk's per-token gradients, which it materialises (one d_in×d_out
matrix per token and weight). "% of matmul" is somna's matmul FLOPs (counted
analytically, `layer_flops`) per second over a square float32 matmul's,
timed the same way in the same run.

`python -m somna.platform.memory_bench --out docs/bench_kernels_memory.md` saves the tables.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from somna.platform.ops_bench import matmul_gflops, measure
from somna.platform.provenance import provenance_line
from somna.kernels.memory_scan import Gates, MemoryRule, MemoryState, memory_scan
from somna.kernels.neural_memory import NeuralMemory

DIM, HEADS, HEAD_DIM, EXPANSION, CHUNK = 256, 4, 64, 2, 64
LAYERS = (
    "titans", "moneta", "yaad", "memora", "atlas", "cms", "self-modifying", "titans-mac", "titans-mag", "titans-mal", "hope"
)


def layer_flops(length: int, batch: int = 1, *, dim: int = DIM, heads: int = HEADS, d: int = HEAD_DIM, chunk: int = CHUNK) -> float:
    """Matmul FLOPs of one NeuralMemory forward (depth 2, momentum): projections + the chunkwise inner loop."""
    h, c = EXPANSION * d, chunk
    projections = 2 * dim * heads * d * 4 + 2 * dim * heads * 3  # q, k, v, out; θ, η, α gates
    per_chunk = (
        2 * c * (d * h + h * d)  # keys through the chunk-start MLP
        + 2 * c * h * d  # back-propagated error of layer 1
        + 2 * c * d * 2 * h + 2 * c * c * d + 2 * c * c * h  # read, layer 1: q [A|S], q kᵀ, (K ⊙ ·) δ
        + 2 * c * h * 2 * d + 2 * c * c * h + 2 * c * c * d  # read, layer 2
        + 2 * d * c * 2 * h + 2 * h * c * 2 * d  # new A and S of both layers
        + 2 * c**3 + 2 * c * c  # K = F Ks, m = F E
    )
    chunks = -(-length // chunk)
    return float(batch * (length * projections + heads * chunks * per_chunk))


def _titans_pytorch():
    """titans-pytorch's NeuralMemory at the configuration, or None when the package is absent."""
    try:
        from titans_pytorch import NeuralMemory as TitansPytorchMemory
    except ImportError:
        return None
    return TitansPytorchMemory(
        DIM, chunk_size=CHUNK, dim_head=HEAD_DIM, heads=HEADS, default_model_kwargs=dict(depth=2, expansion_factor=float(EXPANSION))
    )


def _train_step(layer: torch.nn.Module, x: torch.Tensor) -> None:
    with torch.enable_grad():
        layer(x)[0].pow(2).mean().backward()


def _timed(layer: torch.nn.Module, x: torch.Tensor, backward: bool) -> float:
    """CPU seconds of one forward (no_grad) or one forward + backward of a squared-output loss."""
    start = time.process_time()
    if backward:
        _train_step(layer, x)
    else:
        with torch.no_grad():
            layer(x)
    return time.process_time() - start


def side_by_side(layers: dict, x: torch.Tensor, backward: bool, rounds: int) -> dict[str, float]:
    """Tokens per CPU-second of each layer: one warm-up each, then `rounds` rounds taking turns, best per layer.

    Taking turns spreads the other jobs on a shared machine over all the layers alike.
    """
    best = {}
    for name, layer in layers.items():
        _timed(layer, x, backward)
    for _ in range(rounds):
        for name, layer in layers.items():
            best[name] = min(best.get(name, float("inf")), _timed(layer, x, backward))
    return {name: x.shape[0] * x.shape[1] / seconds for name, seconds in best.items()}


def compare_titans_pytorch(origin: str, quick: bool = False) -> str:
    """Table: somna NeuralMemory (eager and torch.compile'd) vs titans-pytorch, forward and forward + backward."""
    torch.manual_seed(0)
    eager = NeuralMemory(DIM, HEADS, depth=2, expansion=EXPANSION, chunk_size=CHUNK)
    compiled = NeuralMemory(DIM, HEADS, depth=2, expansion=EXPANSION, chunk_size=CHUNK, compile=True)
    compiled.load_state_dict(eager.state_dict())
    theirs = _titans_pytorch()
    cases = [(1, 1024, False), (1, 4096, False), (8, 1024, False), (1, 1024, True), (8, 1024, True)]
    if quick:
        cases = [(1, 1024, False), (1, 1024, True)]
    ceiling = matmul_gflops()
    lines = [
        "### NeuralMemory vs titans-pytorch (tokens per CPU-second, one thread)",
        "",
        "| pass | B × T | somna eager | somna compiled | titans-pytorch | eager / titans | compiled / titans | "
        "somna GFLOP/s (compiled) | % of matmul |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    torch._dynamo.config.recompile_limit = 64  # one graph per shape, grad mode and first/later chunk
    for batch, length, backward in cases:
        x = torch.randn(batch, length, DIM, generator=torch.Generator().manual_seed(1))
        layers = {"eager": eager, "compiled": compiled} | ({"titans-pytorch": theirs} if theirs is not None else {})
        speed = side_by_side(layers, x, backward, rounds=3 if backward else 5)
        ours, fast, other = speed["eager"], speed["compiled"], speed.get("titans-pytorch")
        flops = layer_flops(length, batch) * (3 if backward else 1)  # backward ≈ 2× the forward's matmuls
        gflops = flops * fast / (batch * length) / 1e9
        ratio = lambda a: "—" if other is None else f"{a / other:.2f}×"  # noqa: E731
        lines.append(
            f"| {'fwd+bwd' if backward else 'fwd'} | {batch} × {length} | {ours:,.0f} | {fast:,.0f} | "
            f"{'—' if other is None else f'{other:,.0f}'} | {ratio(ours)} | {ratio(fast)} | {gflops:.1f} | "
            f"{100 * gflops / ceiling:.0f}% |"
        )
    version = "absent: `pip install somna[bench]` adds it" if theirs is None else importlib.metadata.version("titans-pytorch")
    lines += [
        "",
        f"dim {DIM}, {HEADS} heads of {HEAD_DIM}, depth-2 MLP memory (hidden {EXPANSION * HEAD_DIM}), chunk {CHUNK}, "
        f"momentum + forget gate, float32; titans-pytorch {version}. Best of 5 (fwd) or 3 (fwd+bwd) runs, the "
        f"implementations taking turns, after a warm-up (which for the compiled column includes compilation). "
        f"Matmul ceiling: "
        f"{ceiling:.1f} GFLOP/s (1024² float32). fwd+bwd FLOPs taken as 3× the forward's. {origin}",
    ]
    return "\n".join(lines)


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
    hidden = EXPANSION * HEAD_DIM
    weights = (
        torch.randn(1, HEADS, HEAD_DIM, hidden, generator=g) / HEAD_DIM**0.5,
        torch.randn(1, HEADS, hidden, HEAD_DIM, generator=g) / hidden**0.5,
    )
    return q, k, v, gates, MemoryState.start(weights, momentum=True)


def naive_loop(q, k, v, gates: Gates, state: MemoryState) -> torch.Tensor:
    """What one writes first: per token, autograd gradient at the current weights, S ← ηS − θ∇, A ← ρA + S, read."""
    weights, momentum = list(state.weights), list(state.momentum)

    def mlp(ws, x):
        return F.silu(x @ ws[0]) @ ws[1]

    outputs = []
    for t in range(q.shape[2]):
        leaves = [w.detach().requires_grad_() for w in weights]
        with torch.enable_grad():
            loss = 0.5 * (mlp(leaves, k[:, :, t : t + 1]) - v[:, :, t : t + 1]).pow(2).sum()
            grads = torch.autograd.grad(loss, leaves)
        for layer, grad in enumerate(grads):
            momentum[layer] = gates.momentum[:, :, t, None, None] * momentum[layer] - gates.lr[:, :, t, None, None] * grad
            weights[layer] = gates.retain[:, :, t, None, None] * weights[layer] + momentum[layer]
        outputs.append(mlp(weights, q[:, :, t : t + 1]))
    return torch.cat(outputs, dim=2)


def compare_naive_loop(origin: str, quick: bool = False) -> str:
    """Table: the chunkwise inner loop (memory_scan) vs the naive per-token loop, forward."""
    q, k, v, gates, state = _inputs(64)
    chunk_one = memory_scan(q, k, v, gates, state, MemoryRule(chunk_size=1))[0]  # the per-token rule
    agreement = (chunk_one - naive_loop(q, k, v, gates, state)).abs().max()
    lines = [
        "### Inner loop: chunkwise vs a naive per-token loop (forward, tokens per CPU-second)",
        "",
        "| T | naive loop | chunkwise C=16 | speed-up | chunkwise C=64 | speed-up |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for length in (256, 1024) if quick else (256, 1024, 4096):
        q, k, v, gates, state = _inputs(length)
        naive_s, _ = measure(lambda: naive_loop(q, k, v, gates, state), repeats=1)
        row = [f"{length}", f"{length / naive_s:,.0f}"]
        for chunk in (16, 64):
            rule = MemoryRule(chunk_size=chunk)
            chunk_s, _ = measure(lambda: memory_scan(q, k, v, gates, state, rule), repeats=3)
            row += [f"{length / chunk_s:,.0f}", f"{naive_s / chunk_s:.1f}×"]
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        f"Batch 1, {HEADS} heads of {HEAD_DIM}, depth-2 MLP memory, momentum + forget gate, float32. "
        f"Chunk size 1 vs the naive loop: max |Δ| = {agreement:.1e}. {origin}",
    ]
    return "\n".join(lines)


def layer_costs(origin: str, quick: bool = False, batch: int = 8, dim: int = 64, heads: int = 2) -> str:
    """Table: forward and forward + backward speed of each registered memory layer, default options."""
    from somna.platform.registry import KERNELS

    length = 128 if quick else 256
    x = torch.randn(batch, length, dim, generator=torch.Generator().manual_seed(0))
    lines = [
        "### Memory layers: training cost (tokens per CPU-second)",
        "",
        "| layer | fwd+bwd | fwd |",
        "|---|---:|---:|",
    ]
    for name in LAYERS:
        torch.manual_seed(0)
        layer = KERNELS.get(name)(dim, num_heads=heads)
        train, forward = (side_by_side({name: layer}, x, backward, rounds=1)[name] for backward in (True, False))
        lines.append(f"| {name} | {train:,.0f} | {forward:,.0f} |")
    lines += [
        "",
        f"Each layer with its default options, dim {dim}, {heads} heads, batch {batch} × T = {length}, float32, one run "
        f"after a warm-up (about what a training step of `somna bench recall` costs). {origin}",
    ]
    return "\n".join(lines)


def run(quick: bool = False) -> str:
    """The three tables, timed on one torch thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    origin = provenance_line()  # the code and machine at the start: later edits must not relabel this run
    try:
        tables = [compare_titans_pytorch(origin, quick), compare_naive_loop(origin, quick), layer_costs(origin, quick)]
        return "\n\n".join(tables)
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    args = parser.parse_args()
    tables = run(quick=args.quick)
    print(tables)
    if args.out:
        args.out.write_text(tables + "\n")


if __name__ == "__main__":
    main()
