"""Where a generated table came from: the commit, the CPU, torch, its CPU kernel set and thread count.

Floats from the same seed differ between CPU kernel sets (`ATEN_CPU_CAPABILITY`
default / avx2 / avx512 take different summation orders), so a results table
is only reproducible together with the machine facts it was made with. Every
table generator (docs/scripts/*.py, `somna bench`) ends its table with
`provenance_line()`.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def commit() -> str:
    """The source tree's short commit, with "+changes" when it differs from it; "unknown" outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        return head + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance() -> dict[str, str]:
    return {
        "commit": commit(),
        "cpu": f"{cpu_model()} ({os.cpu_count()} logical CPUs)",
        "torch": torch.__version__,
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": str(torch.get_num_threads()),
    }


def provenance_line() -> str:
    """One markdown line naming everything that decides a table's floats."""
    facts = provenance()
    return (
        f"Made at commit {facts['commit']} on {facts['cpu']}, torch {facts['torch']}, "
        f"ATen CPU capability {facts['aten_cpu_capability']}, {facts['threads']} torch thread(s)."
    )
