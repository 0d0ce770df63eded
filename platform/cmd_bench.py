"""`somna bench NAME [--quick]`: benchmarks that print markdown tables (never timed assertions)."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

BENCHMARKS = {
    "kernels": ("somna.platform.ops_bench:run", "somna.platform.memory_bench:run"),
    "recall": ("somna.platform.recall_bench:run",),
    "overhead": ("somna.platform.overhead_bench:run",),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="run a benchmark and print its table")
    parser.add_argument("name", choices=sorted(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a fast look")
    parser.add_argument("--out", type=Path, help="also write the markdown to this file")
    parser.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    tables = []
    for target in BENCHMARKS[args.name]:
        module, function = target.split(":")
        tables.append(getattr(importlib.import_module(module), function)(quick=args.quick))
    text = "\n\n".join(tables)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0
