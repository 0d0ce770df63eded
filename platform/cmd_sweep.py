"""`somna sweep CONFIG key=a,b,c seed=0,1,2 [--out DIR] [--address ADDR]`: a grid of runs on Ray Tune."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep", help="run a grid of configs x seeds as parallel Ray Tune trials, then print the compare table"
    )
    parser.add_argument("config", help="preset name or YAML file")
    parser.add_argument("overrides", nargs="*", help="key=value (fixed) or key=a,b,c (a grid axis), e.g. learner=finetune,replay seed=0,1,2")
    parser.add_argument("--out", type=Path, help="sweep folder, one run directory per trial (default: runs/sweep-<config>)")
    parser.add_argument("--address", help="join a Ray cluster (auto or ray://host:port) instead of starting a local Ray")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all of this machine's)")
    parser.add_argument("--variants", type=Path, help="YAML file mapping row labels to override lists (an ablation table); each runs with every grid point")
    parser.add_argument("--by", help="comma-separated config keys to group the final table by (default: the grid keys except seed)")
    parser.set_defaults(func=_sweep)


def _sweep(args: argparse.Namespace) -> int:
    from somna.evals.compare import comparison_table
    from somna.evals.document import markdown_table
    from somna.platform.sweep import load_variants, run_sweep  # imports Ray: only when a sweep really runs

    out_dir = args.out or Path("runs") / f"sweep-{Path(args.config).stem}"
    by = [key.strip() for key in args.by.split(",") if key.strip()] if args.by else None
    variants = load_variants(args.variants) if args.variants else None
    comparison, paths, failed = run_sweep(args.config, args.overrides, out_dir, address=args.address, num_cpus=args.num_cpus, by=by, variants=variants)
    if comparison is not None:
        print(markdown_table(comparison_table(comparison)))
        print(f"written: {paths['md']}, {paths['csv']}, {paths['png']}")
    for name in failed:
        print(f"somna: error: trial {name} failed (see {out_dir / name} and {out_dir / '.tune'})", file=sys.stderr)
    return 1 if failed else 0
