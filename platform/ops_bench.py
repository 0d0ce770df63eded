"""`somna bench kernels` (ops part): recurrent vs chunkwise speed, peak memory and FLOP efficiency.

Settings follow issue 4: batch 1, H=4 heads, d_k = d_v = 64, float32, CPU,
forward only (inference, under no_grad). Timing runs torch on one thread and
measures the process's CPU time (best of a few repeats): on a machine shared
with other jobs, wall time mostly measures the other jobs, while one thread's
CPU time is what the same code takes on an idle core. Peak memory is the
growth of the process's peak resident set size during one call (Linux: the
peak is reset through /proc/self/clear_refs and read from VmHWM, after
malloc_trim hands cached free memory back), so it counts everything the call
allocates, not just tensors. GFLOP/s counts the chunkwise algorithm's matmul
and triangular-solve FLOPs analytically (elementwise work excluded) and is
compared with a 1024x1024 float32 `torch.matmul` timed the same way in the
same run.
"""

from __future__ import annotations

import ctypes
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from somna.kernels.delta_rule import delta_rule, gated_delta_rule
from somna.kernels.linear_attention import linear_attention
from somna.platform.provenance import provenance_line

HEADS, HEAD_DIM = 4, 64
CHUNK_SIZES = {"linear_attention": 64, "delta_rule": 64, "gated_delta_rule": 32}  # fastest of 16..128 here
TIMING_THREADS = 1
RECURRENT_MAX_LENGTH = 4096  # longer recurrent runs are extrapolated linearly from this length
OPS: dict[str, Callable] = {
    "linear_attention": linear_attention,
    "delta_rule": delta_rule,
    "gated_delta_rule": gated_delta_rule,
}


def run(quick: bool = False) -> str:
    """Measure every op at each length and return the markdown table (with the machine noted)."""
    lengths = (256, 1024) if quick else (256, 1024, 4096, 16384)
    threads = torch.get_num_threads()
    torch.set_num_threads(TIMING_THREADS)
    origin = provenance_line()  # the code and machine at the start: later edits must not relabel this run
    try:
        return _table(*_measure_all(lengths), origin)
    finally:
        torch.set_num_threads(threads)


def _measure_all(lengths: tuple[int, ...]) -> tuple[list[tuple], float, float]:
    ceiling_before = matmul_gflops()
    rows = []
    for name in OPS:
        recurrent_seconds_per_token = None
        for length in lengths:
            inputs = make_inputs(name, length)
            chunk_size = CHUNK_SIZES[name]
            chunk_time, chunk_memory = measure(lambda: OPS[name](*inputs, chunk_size=chunk_size), repeats=5)
            if length <= RECURRENT_MAX_LENGTH:
                recurrent_time, recurrent_memory = measure(lambda: OPS[name](*inputs), repeats=2)
                recurrent_seconds_per_token = recurrent_time / length
                extrapolated = False
            else:
                recurrent_time, recurrent_memory = recurrent_seconds_per_token * length, None
                extrapolated = True
            flops = chunkwise_flops(name, length, chunk_size)
            rows.append((name, length, chunk_size, recurrent_time, extrapolated, chunk_time,
                         recurrent_memory, chunk_memory, flops / chunk_time / 1e9))
    return rows, max(ceiling_before, matmul_gflops()), ceiling_before


def make_inputs(name: str, length: int) -> tuple[torch.Tensor, ...]:
    """Random q, k, v (k L2-normalised, as the layers do) plus beta / log-decay where the op takes them."""
    generator = torch.Generator().manual_seed(0)
    shape = (1, HEADS, length, HEAD_DIM)
    q = torch.randn(shape, generator=generator)
    k = torch.nn.functional.normalize(torch.randn(shape, generator=generator), dim=-1)
    v = torch.randn(shape, generator=generator)
    if name == "linear_attention":
        return q, k, v
    beta = torch.rand(shape[:3], generator=generator)
    if name == "delta_rule":
        return q, k, v, beta
    return q, k, v, beta, -0.1 * torch.rand(shape[:3], generator=generator)


def chunkwise_flops(name: str, length: int, chunk_size: int, d_k: int = HEAD_DIM, d_v: int = HEAD_DIM) -> float:
    """Matmul + triangular-solve FLOPs of the chunkwise algorithm (per the code in linear_attention.py / delta_rule.py)."""
    chunks = math.ceil(length / chunk_size)
    c = chunk_size
    if name == "linear_attention":
        # Q Kᵀ, scores V, Kᵀ V per chunk, Q S_start
        per_chunk = 2 * c * c * d_k + 2 * c * c * d_v + 2 * c * d_k * d_v + 2 * c * d_k * d_v
    else:
        per_chunk = (
            2 * c * c * d_k * 2  # K Kᵀ and Q Kᵀ
            + c * c * (d_k + d_v)  # triangular solve for W and Ũ
            + 2 * c * c * (d_v + d_k)  # P Ũ and P W
            + 2 * c * d_k * (d_k + d_v)  # K̃ᵀ W and K̃ᵀ Ũ
            + 2 * d_k * d_k * d_v  # inter-chunk state step
            + 2 * c * d_k * d_v  # (diag(e^γ) Q − P W) S_start
        )
    return float(HEADS * chunks * per_chunk)


def matmul_gflops(size: int = 1024, repeats: int = 5) -> float:
    """The machine's practical ceiling: best-of-`repeats` GFLOP/s of one square float32 matmul."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    seconds, _ = measure(lambda: a @ b, repeats=repeats)
    return 2 * size**3 / seconds / 1e9


def measure(function: Callable[[], object], *, repeats: int) -> tuple[float, int | None]:
    """(best CPU time in seconds over `repeats` calls after one warm-up, peak RSS growth in bytes of the warm-up)."""
    with torch.no_grad():
        _release_free_memory()
        baseline = _rss_bytes("VmRSS")
        peak_reset = _reset_peak_rss()
        function()
        memory = _rss_bytes("VmHWM") - baseline if peak_reset else None
        best = math.inf
        for _ in range(repeats):
            start = time.process_time()
            function()
            best = min(best, time.process_time() - start)
    return best, memory


def _release_free_memory() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the measurement is only less tight
        pass


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _megabytes(value: int | None) -> str:
    return "—" if value is None else f"{value / 2**20:.1f}"


def _table(rows: list[tuple], ceiling: float, ceiling_before: float, origin: str) -> str:
    lines = [
        "### Functional ops: recurrent vs chunkwise (B=1, H=4, d=64, float32, CPU, forward; tokens per CPU-second)",
        "",
        f"{origin} torch.matmul 1024² float32 ceiling: {ceiling:.1f} GFLOP/s "
        f"(best of the measurements before, {ceiling_before:.1f}, and after the ops).",
        "",
        "| op | T | chunk | recurrent tok/s | chunkwise tok/s | chunkwise / recurrent | peak MB recurrent | "
        "peak MB chunkwise | chunkwise GFLOP/s | % of matmul |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, length, chunk, rec_time, extrapolated, chunk_time, rec_memory, chunk_memory, gflops in rows:
        mark = "*" if extrapolated else ""
        lines.append(
            f"| {name} | {length} | {chunk} | {length / rec_time:,.0f}{mark} | {length / chunk_time:,.0f} | "
            f"{rec_time / chunk_time:.1f}{mark} | {_megabytes(rec_memory)} | {_megabytes(chunk_memory)} | "
            f"{gflops:.2f} | {100 * gflops / ceiling:.1f}% |"
        )
    lines += [
        "",
        f"\\* extrapolated linearly from the recurrent time at T={RECURRENT_MAX_LENGTH} (not run). "
        "Peak MB: growth of the process's peak RSS during one call. GFLOP/s counts matmul and "
        "triangular-solve FLOPs of the chunkwise algorithm only.",
    ]
    return "\n".join(lines)
