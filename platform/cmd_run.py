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

from somna.evals.rundir import CONFIG_FILE
from somna.platform.builders import build_curriculum, build_learner
from somna.platform.config import ConfigError, load_config, run_name
from somna.platform.registry import UnknownNameError
from somna.platform.runner import RunProgress, run
from somna.platform.storage import RemoteRunDirectory, is_uri

SUMMARY_KEYS = ("acc", "bwt", "fwt", "forgetting")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run a lifelong-learning experiment")
    parser.add_argument("config", help="preset name (see `somna presets`) or path to a YAML file")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. learner=replay learner.buffer=500 seed=3")
    parser.add_argument("--out", help="run directory, a path or a URI such as s3://bucket/run "
                        "(default: <storage_path>/<curriculum>-<learner>-s<seed>)")
    parser.add_argument("--address", help="join a Ray cluster: auto or ray://host:port (same as ray.address=...)")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="delete an existing run directory first")
    existing.add_argument("--resume", action="store_true", help="continue an existing run directory with this config")
    parser.set_defaults(func=_run)

    parser = subparsers.add_parser("resume", help="continue a run directory after a crash (same config, same metrics)")
    parser.add_argument("run_dir", help="the run directory (path or URI)")
    parser.add_argument("--address", help="join a Ray cluster: auto or ray://host:port")
    parser.set_defaults(func=_resume)


def _run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides) + ([f"ray.address={args.address}"] if args.address else [])
    cfg = load_config(args.config, overrides)
    location = args.out or f"{cfg.storage_path.rstrip('/')}/{run_name(cfg)}"
    _check_buildable(cfg)
    run_dir, remote = _open(location)
    exists = remote.exists() if remote else _has_content(run_dir)
    if exists and not (args.overwrite or args.resume):
        raise ConfigError(f"run directory {location} already exists; pass --resume to continue it or --overwrite to replace it")
    if remote is not None:
        if args.overwrite and exists:
            remote.filesystem.delete_dir_contents(remote.remote_path)
        run_dir = remote.pull() if exists and args.resume else remote.fresh()
    elif args.overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    return _execute(cfg, run_dir, resume=bool(args.resume and exists), remote=remote, location=location)


def _resume(args: argparse.Namespace) -> int:
    run_dir, remote = _open(args.run_dir)
    if remote is not None:
        if not remote.exists():
            raise ConfigError(f"cannot resume {args.run_dir}: nothing there")
        run_dir = remote.pull()
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise ConfigError(f"cannot resume {args.run_dir}: no config.yaml there")
    cfg = load_config(str(config_path), [f"ray.address={args.address}"] if args.address else [])
    _check_buildable(cfg)
    return _execute(cfg, run_dir, resume=True, remote=remote, location=args.run_dir)


def _open(location: str) -> tuple[Path, RemoteRunDirectory | None]:
    """The local directory the loop writes, and the remote it mirrors to when `location` is a URI."""
    if is_uri(location):
        remote = RemoteRunDirectory(location)
        return remote.local, remote
    return Path(location), None


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


def _execute(cfg: DictConfig, run_dir: Path, *, resume: bool, remote: RemoteRunDirectory | None, location: str) -> int:
    console = Console(stderr=True)
    console.print(f"[bold]somna[/bold] {cfg.curriculum.name} · learner={cfg.learner.name} · scenario={cfg.scenario} "
                  f"· seed={cfg.seed} · executor={cfg.executor} → {location}")
    progress = RichProgress(console) if cfg.logging.progress else None
    push = (lambda experience: remote.push()) if remote is not None else None
    try:
        summary = run(cfg, run_dir, resume=resume, progress=progress, on_experience_end=push)
    finally:
        if remote is not None:
            remote.push()  # whatever was committed, even when the run stopped early
    Console().print(summary_table(summary))
    Console().print(f"run directory: {location}")
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
