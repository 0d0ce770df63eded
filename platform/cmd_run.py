"""`somna run CONFIG [key=value ...]` and `somna resume RUN_DIR`."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from somna.platform.builders import build_curriculum, build_learner
from somna.platform.config import ConfigError, load_config, run_name
from somna.platform.registry import UnknownNameError
from somna.platform.runner import RunProgress, run

SUMMARY_KEYS = ("acc", "bwt", "fwt", "forgetting")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run a lifelong-learning experiment")
    parser.add_argument("config", help="preset name (see `somna presets`) or path to a YAML file")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. learner=replay learner.buffer=500 seed=3")
    parser.add_argument("--out", type=Path, help="run directory (default: runs/<curriculum>-<learner>-s<seed>)")
    parser.add_argument("--address", help="join a Ray cluster: auto or ray://host:port (same as ray.address=...)")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="delete an existing run directory first")
    existing.add_argument("--resume", action="store_true", help="continue an existing run directory with this config")
    parser.set_defaults(func=_run)

    parser = subparsers.add_parser("resume", help="continue a run directory after a crash (same config, same metrics)")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--address", help="join a Ray cluster: auto or ray://host:port")
    parser.set_defaults(func=_resume)


def _run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides) + ([f"ray.address={args.address}"] if args.address else [])
    cfg = load_config(args.config, overrides)
    run_dir = args.out or Path("runs") / run_name(cfg)
    _check_buildable(cfg)
    if _has_content(run_dir) and not (args.overwrite or args.resume):
        raise ConfigError(f"run directory {run_dir} already exists; pass --resume to continue it or --overwrite to replace it")
    if args.overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    resume = bool(args.resume and _has_content(run_dir))
    return _execute(cfg, run_dir, resume=resume)


def _resume(args: argparse.Namespace) -> int:
    config_path = args.run_dir / "config.yaml"
    if not config_path.is_file():
        raise ConfigError(f"cannot resume {args.run_dir}: no config.yaml there")
    cfg = load_config(str(config_path), [f"ray.address={args.address}"] if args.address else [])
    _check_buildable(cfg)
    return _execute(cfg, args.run_dir, resume=True)


def _has_content(path: Path) -> bool:
    return path.exists() and any(path.iterdir())


def _check_buildable(cfg: DictConfig) -> None:
    """Build the curriculum and learner once here, so bad sizes fail before Ray starts."""
    try:
        with torch.random.fork_rng():
            build_learner(cfg, build_curriculum(cfg).info)
    except UnknownNameError as error:
        raise ConfigError(str(error)) from None
    except (ValueError, TypeError) as error:
        raise ConfigError(str(error).strip().splitlines()[0]) from None


def _execute(cfg: DictConfig, run_dir: Path, *, resume: bool) -> int:
    console = Console(stderr=True)
    console.print(f"[bold]somna[/bold] {cfg.curriculum.name} · learner={cfg.learner.name} · scenario={cfg.scenario} "
                  f"· seed={cfg.seed} · executor={cfg.executor} → {run_dir}")
    progress = RichProgress(console) if cfg.logging.progress else None
    summary = run(cfg, run_dir, resume=resume, progress=progress)
    Console().print(summary_table(summary))
    Console().print(f"run directory: {run_dir}")
    return 0


def summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title=f"{summary['curriculum']} · {summary['learner']} · {summary['scenario']}-IL · seed {summary['seed']}")
    for key in SUMMARY_KEYS:
        table.add_column(key.upper(), justify="right")
    table.add_row(*(f"{summary[key]:+.4f}" if key != "acc" else f"{summary[key]:.4f}" for key in SUMMARY_KEYS))
    return table


class RichProgress(RunProgress):
    """A progress bar over experiences that names the phase being run."""

    def __init__(self, console: Console):
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=False,
        )
        self.task: Any = None

    def start(self, total: int, done: int) -> None:
        self.progress.start()
        self.task = self.progress.add_task("starting", total=total, completed=done)

    def phase(self, experience: int, phase: str) -> None:
        self.progress.update(self.task, description=f"experience {experience}: {phase}")

    def advance(self) -> None:
        self.progress.advance(self.task)

    def stop(self) -> None:
        self.progress.update(self.task, description="done")
        self.progress.stop()


__all__ = ["register", "summary_table"]
