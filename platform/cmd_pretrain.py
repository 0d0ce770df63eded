"""`somna pretrain PRESET [key=value ...] [--out DIR]`: pretrain a base language model on the generated world."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from somna.platform.config import ConfigError
from somna.platform.pretraining import SUMMARY_KEYS, cached_base, load_pretrain_config, preset_names, pretrain_into, write_whole


def register(subparsers: argparse._SubParsersAction) -> None:
    presets = ", ".join(preset_names())
    parser = subparsers.add_parser(
        "pretrain",
        help="pretrain a base language model on the generated world (text learners name it with learner.model.base)",
        description=(
            f"Pretrain somna's base LM. Presets (platform/pretrain_presets/): {presets}. Without --out the base goes to "
            "the user cache, where `learner.model.base=PRESET` finds it; with --out, to a new directory that "
            "`learner.model.base=DIR` can name."
        ),
    )
    parser.add_argument("preset", help=f"a pretrain preset ({presets}) or a YAML file with the same keys (`extends: PRESET_OR_FILE` starts it from another)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.steps=500 model.dim=64 world.seed=1")
    parser.add_argument("--out", help="a new directory for the base (default: the user cache)")
    parser.set_defaults(func=_pretrain)


def _pretrain(args: argparse.Namespace) -> int:
    cfg = load_pretrain_config(args.preset, args.overrides)
    if args.out:
        out = Path(args.out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ConfigError(f"--out {out} already exists and is not empty; choose a new directory (nothing was written)")
        write_whole(out, lambda folder: pretrain_into(cfg, folder))
    else:
        out = cached_base(cfg)
    Console().print(summary_table(json.loads((out / "summary.json").read_text())))
    Console().print(f"base directory: {out}")
    return 0


def summary_table(summary: dict[str, Any]) -> Table:
    """One row per summary key (a narrow terminal still shows every name and value)."""
    table = Table(title=f"somna pretrain {summary['name']}")
    table.add_column("key")
    table.add_column("value", justify="right")
    for key in (key for key in SUMMARY_KEYS if key in summary):
        value = summary[key]
        table.add_row(key, f"{value:,}" if isinstance(value, int) else f"{value:.3g}")
    return table


__all__ = ["register", "summary_table"]
