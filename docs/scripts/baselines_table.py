"""The digit baselines x {class-IL split, task-IL split, domain-IL permuted, task-IL split 2x5} over seeds, as markdown.

Each learner runs with its Config defaults (replay and DER++ also with
`optimizer_state=reset`, the optimizer built anew for every experience)
through docs/scripts/table_runs.py, so every run is what
`somna run split-digits learner=NAME [scenario=task] seed=S` prints. Cells are
mean ± 95% t-CI over the seeds; the table and its provenance line go to
docs/baselines.md.

    .venv/bin/python docs/scripts/baselines_table.py [--seeds 0 1 2 3 4] [--workers 2] [--out docs/baselines.md]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reproduce import Row
from somna.platform.provenance import provenance_line
from table_runs import RunSpec, cell, run_all

LEARNERS: dict[str, tuple[str, dict[str, Any]]] = {  # row label -> (learner, overrides)
    "finetune": ("finetune", {}),
    "ewc": ("ewc", {}),
    "lwf": ("lwf", {}),
    "der": ("der", {}),
    "der (optimizer_state=reset)": ("der", {"optimizer_state": "reset"}),
    "replay": ("replay", {}),
    "replay (optimizer_state=reset)": ("replay", {"optimizer_state": "reset"}),
    "joint": ("joint", {}),
}
SETTINGS = {  # column label -> (curriculum, scenario, experiences)
    "class-IL split-digits": ("split-digits", "class", 5),
    "task-IL split-digits": ("split-digits", "task", 5),
    "domain-IL permuted-digits": ("permuted-digits", "domain", 5),
    # 5 x 2-class task-IL is nearly saturated (finetune ~0.99); 5-class tasks show task-IL forgetting.
    "task-IL split-digits 2x5": ("split-digits", "task", 2),
}
SEEDS = [0, 1, 2, 3, 4]
DOC = Path(__file__).resolve().parents[1] / "baselines.md"
HEADING = "| learner | " + " | ".join(f"{setting} ACC | BWT" for setting in SETTINGS) + " | s/run |"
TOLERANCE = 0.01  # the finetune row moved by at most 0.002 under ATEN default/avx2 (+ MKL's paths) vs AVX-512


def spec(label: str, setting: str, seed: int) -> RunSpec:
    learner_name, overrides = LEARNERS[label]
    curriculum_name, scenario, experiences = SETTINGS[setting]
    return learner_name, overrides, curriculum_name, {"num_experiences": experiences}, scenario, seed


def row(label: str, seeds: list[int], workers: int, cache: Path | None = None) -> str:
    """One learner's markdown line: ACC and BWT per setting over the seeds, and its mean wall seconds per run."""
    keys = {f"{label}|{setting}|{seed}": (label, setting, seed) for setting in SETTINGS for seed in seeds}
    results = run_all({key: spec(*parts) for key, parts in keys.items()}, workers, cache)
    cells = []
    for setting in SETTINGS:
        runs = [results[f"{label}|{setting}|{seed}"] for seed in seeds]
        cells += [cell(runs, "acc"), cell(runs, "bwt")]
    wall = np.mean([result["wall_s"] for result in results.values()])
    return f"| {label} | " + " | ".join(cells) + f" | {wall:.1f} |"


def table(seeds: list[int], workers: int, cache: Path) -> str:
    lines = [HEADING, "|---|" + "---:|---:|" * len(SETTINGS) + "---:|"]
    return "\n".join(lines + [row(label, seeds, workers, cache) for label in LEARNERS])


def cheap_rows() -> list[Row]:
    """finetune in all four settings over the table's seeds (about a second a run)."""
    return [Row(DOC, HEADING, "finetune", lambda: row("finetune", SEEDS, workers=1), TOLERANCE, ignore=("s/run",))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=SEEDS)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DOC)
    parser.add_argument("--cache", type=Path, default=Path("runs/baselines_table.jsonl"), help="finished runs; delete to recompute")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in every run, so that the provenance line names the runs' thread count
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    body = table(args.seeds, args.workers, args.cache)
    text = (
        f"# Digit baselines, seeds {', '.join(map(str, args.seeds))}\n\n"
        "Each learner with its Config defaults (MLP 64-256-256-10, Adam lr 1e-3 kept across experiences "
        "(`optimizer_state=keep`), 5 epochs per experience, batch 32; replay/der buffer 200; ewc lambda 1000, "
        "gamma 1; lwf alpha 1, T 2; der alpha 0.3, beta 1); the `optimizer_state=reset` rows build a new Adam "
        "for every experience. 5 experiences (2 classes each in split-digits) unless the column says 2x5; "
        "ACC = mean final accuracy, BWT = mean (final - just-learned) accuracy on earlier experiences; "
        "mean ± 95% t-CI over the seeds; s/run = mean wall seconds of one run on one torch thread.\n"
        f"Produced by `docs/scripts/baselines_table.py --seeds {' '.join(map(str, args.seeds))}`.\n\n"
        f"{body}\n\n{provenance_line()}\n"
    )
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
