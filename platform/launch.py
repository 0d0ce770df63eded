"""Starting a run: where its directory goes, what may be replaced, and the loop itself — for the CLI and the Python API.

`prepare` decides everything that can fail before any work (the config builds,
the run directory may be written) and `execute` runs the loop, mirroring to a
URI when the location is one. `--overwrite` deletes only a somna run directory
(recognised by its config.yaml), never the current directory or one of its
parents, and never a folder that holds anything else.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from somna.evals.rundir import is_run_dir
from somna.platform.builders import build_curriculum, build_learner
from somna.platform.config import ConfigError, run_name
from somna.platform.registry import UnknownNameError
from somna.platform.runner import RunProgress, run
from somna.platform.storage import RemoteRunDirectory, is_uri


@dataclass
class Launch:
    """A run ready to execute: its config, the local directory the loop writes, and where it is mirrored."""

    cfg: DictConfig
    run_dir: Path
    location: str  # what the user named: a path or a URI
    resume: bool
    remote: RemoteRunDirectory | None = None


def default_location(cfg: DictConfig) -> str:
    return f"{cfg.storage_path.rstrip('/')}/{run_name(cfg)}"


def prepare(cfg: DictConfig, out: str | None = None, *, overwrite: bool = False, resume: bool = False) -> Launch:
    """Check the config builds and the location may be used; clear it for --overwrite. Raises ConfigError."""
    if overwrite and resume:
        raise ConfigError("choose --overwrite or --resume, not both")
    location = out or default_location(cfg)
    check_buildable(cfg)
    if is_uri(location):
        remote = RemoteRunDirectory(location)
        exists = remote.exists()
        _refuse_existing(location, exists, overwrite, resume)
        if overwrite and exists:
            remote.filesystem.delete_dir_contents(remote.remote_path)
        run_dir = remote.pull() if exists and resume else remote.fresh()
        return Launch(cfg, run_dir, location, resume and exists, remote)
    run_dir = Path(location)
    exists = run_dir.exists() and any(run_dir.iterdir())
    _refuse_existing(location, exists, overwrite, resume)
    if overwrite and exists:
        check_replaceable(run_dir)
        shutil.rmtree(run_dir)
    return Launch(cfg, run_dir, location, resume and exists)


def _refuse_existing(location: str, exists: bool, overwrite: bool, resume: bool) -> None:
    if exists and not (overwrite or resume):
        raise ConfigError(f"run directory {location} already exists; pass --resume to continue it or --overwrite to replace it")


def check_replaceable(path: Path) -> None:
    """A directory --overwrite may delete: a somna run directory that is not the current directory or above it."""
    resolved, here = path.resolve(), Path.cwd().resolve()
    if resolved == here or resolved in here.parents:
        raise ConfigError(f"--overwrite refuses to delete {path}: it is the current directory or one of its parents")
    if not is_run_dir(path):
        raise ConfigError(f"--overwrite refuses to delete {path}: it is not a somna run directory (no config.yaml); remove it yourself")


def check_buildable(cfg: DictConfig) -> None:
    """Build the curriculum and learner once here, so bad sizes fail before Ray starts."""
    try:
        with torch.random.fork_rng():
            build_learner(cfg, build_curriculum(cfg).info)
    except UnknownNameError as error:
        raise ConfigError(str(error)) from None
    except (ValueError, TypeError) as error:
        raise ConfigError(str(error).strip().splitlines()[0]) from None


def execute(launch: Launch, progress: RunProgress | None = None) -> dict[str, Any]:
    """Run (or resume) the loop into the launch's directory; a remote copy is pushed after every experience."""
    remote = launch.remote
    push: Callable[[int], None] | None = (lambda experience: remote.push()) if remote is not None else None
    try:
        return run(launch.cfg, launch.run_dir, resume=launch.resume, progress=progress, on_experience_end=push)
    finally:
        if remote is not None:
            remote.push()  # whatever was committed, even when the run stopped early
