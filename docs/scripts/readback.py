"""What the scripts that read finished `lm_table.py` fact-stream runs back share: their arguments and their table.

Such a script computes a dict of scores per run (cached in the run directory) and reports, per row,
each column's mean ± 95% CI over seeds, between `lm_table:BLOCK` markers of docs/lm_results.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from somna.evals.rundir import load_run
from somna.evals.stats import mean_ci
from somna.platform.builders import build_curriculum, build_learner
from somna.platform.config import load_config
from somna.platform.provenance import provenance_line

from lm_table import write_between_markers  # this script's folder is on sys.path when it runs


Scores = dict[str, float]


def cached_in_run(filename: str) -> Callable[[Callable[[Path], Scores]], Callable[[Path], Scores]]:
    """Keep a run's scores as JSON in its directory (`filename`), so a rerun with more rows reads the finished ones back."""
    def decorate(scores_of: Callable[[Path], Scores]) -> Callable[[Path], Scores]:
        @functools.wraps(scores_of)
        def cached(run_dir: Path) -> Scores:
            cache = run_dir / filename
            if cache.exists():
                return json.loads(cache.read_text())
            scores = scores_of(run_dir)
            cache.write_text(json.dumps(scores) + "\n")
            return scores
        return cached
    return decorate


def rebuilt(run_dir: Path) -> tuple[Any, Any, list[Any]]:
    """A finished run, its learner rebuilt from the run's config (as it started: the base) and its curriculum's experiences.
    The config is read as `somna resume` reads it, so a key added since the run was made takes its default."""
    run = load_run(run_dir)
    cfg = load_config(str(run_dir / "config.yaml"))
    curriculum = build_curriculum(cfg)
    return run, build_learner(cfg, curriculum.info), list(curriculum)


def readback_args(doc: str, block: str, rows: list[str] | None = None) -> argparse.Namespace:
    """--rows (required unless `rows` gives a default), --seeds, --runs, --out and --block (default `block`)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rows", nargs="+", required=rows is None, default=rows)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--runs", type=Path, default=Path("runs/lm-table/ablation"))
    parser.add_argument("--out", type=Path, default=Path("docs/lm_results.md"))
    parser.add_argument("--block", default=block, help="write between lm_table:BLOCK markers")
    torch.set_num_threads(1)
    return parser.parse_args()


def cell(values: list[float], digits: int) -> str:
    """Mean ± 95% CI over the seeds that have a value ("—" when none has: e.g. no fact fell in a group),
    with the count of seeds when only some have one."""
    present = [value for value in values if not math.isnan(value)]
    if not present:
        return "—"
    formatted = mean_ci(present).format(digits)
    return formatted if len(present) == len(values) else f"{formatted} ({len(present)} seeds)"


def write_row_table(
    args: argparse.Namespace, script: str, intro: str, header: str, columns: list[str],
    scores_of: Callable[[Path], Scores], digits: Callable[[str], int] = lambda _column: 3,
) -> None:
    """One line per row of `args.rows`: each column's mean ± 95% CI over the seeds' `scores_of(run directory)`.

    `intro` follows "Seeds ...; produced by `<command>` from the `lm_table.py` runs."; `header` is the
    table's first line (its row column included). Printed and written between `args.block`'s markers."""
    command = " ".join([f"docs/scripts/{script} --rows", *map(repr, args.rows), "--block", args.block])
    lines = [
        f"Seeds {', '.join(map(str, args.seeds))}; mean ± 95% CI over seeds; produced by `{command}` from the "
        f"`lm_table.py` runs. {intro}",
        "",
        header,
        "|---|" + "---:|" * len(columns),
    ]
    for row in args.rows:
        per_seed = [scores_of(args.runs / row.replace(" ", "_") / f"seed{seed}") for seed in args.seeds]
        lines.append(f"| {row} | {' | '.join(cell([scores[c] for scores in per_seed], digits(c)) for c in columns)} |")
    report = "\n".join(lines + ["", provenance_line()])
    print(report)
    write_between_markers(args.out, report, args.block)
