"""The hypernetwork and Hope learners on split-digits next to joint training (seed 0) -> docs/self_modification.md.

Every row is one `somna run` command (inline executor, a scratch run
directory: docs/scripts/table_runs.py), so its cells are what that command
prints. Plasticity = mean_j R[j, j], each experience's accuracy right after it
was learned: it tells forgetting (low BWT, high plasticity) from not learning.

    .venv/bin/python docs/scripts/self_modification_table.py [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from reproduce import Row
from somna.platform.provenance import provenance_line
from table_runs import somna_run

COMMANDS = {  # the `somna run` arguments of each row -> what the row shows
    "split-digits-hnet": "task-IL, hypernetwork with the output regulariser (von Oswald et al.)",
    "split-digits-hnet scenario=class": "class-IL, each example's task inferred by minimum predictive entropy",
    "split-digits learner=hope scenario=task": "task-IL, Hope blocks reading 8 pixel rows",
    "split-digits learner=joint scenario=task": "task-IL upper bound: an MLP trained on all data seen",
}
DOC = Path(__file__).resolve().parents[1] / "self_modification.md"
HEADER = "| command | setting | ACC | BWT | plasticity | s |"
TOLERANCE = 0.01  # the hnet row was identical under ATEN default/avx2/avx512 with MKL's matching paths


def row(command: str, seed: int) -> str:
    """One command's markdown line: ACC, BWT, plasticity and the run's wall seconds."""
    config, *overrides = command.split()
    summary = somna_run(config, [*overrides, f"seed={seed}"])
    metrics = f"{summary['acc']:.3f} | {summary['bwt']:+.3f} | {summary['plasticity']:.3f}"
    return f"| `somna run {command}` | {COMMANDS[command]} | {metrics} | {summary['wall_s']:.0f} |"


def cheap_rows() -> list[Row]:
    """The hypernetwork in task-IL (under a minute)."""
    return [Row(DOC, HEADER, "`somna run split-digits-hnet`", lambda: row("split-digits-hnet", 0), TOLERANCE, ignore=("s",))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DOC)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    rows = [row(command, args.seed) for command in COMMANDS]
    table = "\n".join([HEADER, "|---|---|---:|---:|---:|---:|", *rows])
    text = f"""# Hypernetwork and Hope learners on split-digits (seed {args.seed})

{table}

ACC, BWT as in DESIGN.md; plasticity = mean accuracy on each experience right after learning it;
s = wall seconds of the run on one torch thread. Produced by
`docs/scripts/self_modification_table.py --seed {args.seed}` ({time.time() - start:.0f} s in total).
{provenance_line()}
"""
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
