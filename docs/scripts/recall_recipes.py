"""Search an outer-loop recipe (learning rate, steps) per kernel for `somna bench recall`, on the dev split only.

For each kernel named (default: every registered one), trains the recall
model of platform/recall_bench.py at every (learning rate, steps) of the grid
with training seed TUNING_SEED (the benchmark trains with seeds 0, 1, 2) and
scores it on the dev sequences (`dev_sets`: generator seeds 20000 + load; the
benchmark's held-out sequences use 10000 + load and are never touched here).
The score is the mean dev recall over the loads; a recipe that does not beat
the default by more than MARGIN keeps the default (and ties go to fewer steps),
so the table only changes where tuning clearly helps. Prints one line per run
and the RECIPES entries to paste into platform/recall_bench.py.

    .venv/bin/python docs/scripts/recall_recipes.py titans-mac moneta --out /tmp/recipes.md
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import replace
from pathlib import Path

import torch

from somna.platform.recall_bench import FULL, TrainingDiverged, dev_sets, recall_accuracy, train
from somna.platform.registry import KERNELS

TUNING_SEED = 100
LEARNING_RATES = (3e-3, 1e-2)
STEPS = (600, 1200)
MARGIN = 0.01


def dev_score(name: str, learning_rate: float, steps: int) -> float:
    """Mean dev recall over the loads after training `name` with this recipe (0 if training diverged)."""
    settings = replace(FULL, learning_rate=learning_rate, steps=steps, seed=TUNING_SEED)
    try:
        model = train(KERNELS.get(name), settings)
    except TrainingDiverged:
        return 0.0
    scores = [recall_accuracy(model, batch) for batch in dev_sets(settings).values()]
    return sum(scores) / len(scores)


def search(name: str, log: list[str]) -> tuple[float, int] | None:
    """The best (learning rate, steps) for `name`, or None when the default is as good."""
    default = (FULL.learning_rate, FULL.steps)
    scores = {}
    for learning_rate, steps in itertools.product(LEARNING_RATES, STEPS):
        start = time.process_time()
        scores[(learning_rate, steps)] = dev_score(name, learning_rate, steps)
        line = f"| {name} | {learning_rate:g} | {steps} | {scores[(learning_rate, steps)]:.3f} | {time.process_time() - start:.0f} |"
        print(line, flush=True)
        log.append(line)
    best = max(scores, key=lambda recipe: (scores[recipe], -recipe[1]))
    return None if scores[best] <= scores.get(default, 0.0) + MARGIN else best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kernels", nargs="*", help="registered kernel names (default: all)")
    parser.add_argument("--out", type=Path, help="also write the log and the chosen recipes here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    log = ["| kernel | lr | steps | mean dev recall | CPU s |", "|---|---:|---:|---:|---:|"]
    print("\n".join(log))
    chosen = {name: search(name, log) for name in args.kernels or KERNELS.names()}
    entries = [f'    "{name}": Recipe({recipe[0]:g}, {recipe[1]}),' for name, recipe in chosen.items() if recipe is not None]
    text = "\n".join(log + ["", "RECIPES = {", *entries, "}"])
    print("\n".join(["", "RECIPES = {", *entries, "}"]))
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
