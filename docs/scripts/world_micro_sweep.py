"""The sweep behind `world-micro`'s recipe: what each change to the old two-layer recipe buys in reading.

    .venv/bin/python docs/scripts/world_micro_sweep.py [--jobs 2] [--out docs/world_micro_sweep.md]

Each row is the `world-micro` pretrain preset with overrides (`somna pretrain world-micro KEY=VALUE`),
pretrained into the user cache (or read back from it: a rerun is free) on one torch thread, seed 0;
in-context QA is exact match on its 200 held-out reading items about unseen people (about ±0.03).
Minutes are the training loop's wall clock, CPU time in parentheses (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from somna.platform.pretraining import cached_base, load_pretrain_config
from somna.platform.provenance import provenance_line

OLD_RECIPE = ["model.num_layers=2", "train.steps=1200"]  # the preset before it got its third layer
CHANGES = [
    [],
    ["train.lr=0.01"],
    ["model.num_heads=2"],
    ["train.lr=0.01", "model.num_heads=2"],
    ["world.reading=0.9", "world.passages=0.05", "world.closed_book=0.05"],
    ["model.dim=96"],
    ["train.steps=2400"],
    ["model.num_layers=3"],
    ["model.num_layers=3", "train.steps=1800"],
    ["model.num_layers=3", "train.steps=2400"],
]


def summary_of(overrides: list[str]) -> dict:
    torch.set_num_threads(1)
    entry = cached_base(load_pretrain_config("world-micro", [*OLD_RECIPE, *overrides]), progress=False)
    return json.loads((entry / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs/world_micro_sweep.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # the presets' thread count, so that the provenance line names it
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        summaries = list(pool.map(summary_of, CHANGES))
    preset = load_pretrain_config("world-micro")
    rows = []
    for change, summary in zip(CHANGES, summaries):
        label = " ".join(f"`{c}`" for c in change) or "none (2 layers, 1,200 steps)"
        if load_pretrain_config("world-micro", [*OLD_RECIPE, *change]) == preset:
            label += " (the preset now)"
        rows.append(f"| {label} | {summary['in_context_qa']:.3f} | {summary['closed_book_qa_world']:.3f} | {summary['minutes']:.1f} ({summary['cpu_minutes']:.1f}) |")
    table = "\n".join([
        "Produced by `docs/scripts/world_micro_sweep.py`: `world-micro` with each change to the old two-layer recipe, seed 0, one torch thread, 200 probes per score.",
        "",
        "| change to the two-layer recipe | in-context QA | closed-book, world | minutes (CPU) |",
        "|---|---:|---:|---:|",
        *rows,
        "",
        provenance_line(),
    ])
    print(table)
    args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
