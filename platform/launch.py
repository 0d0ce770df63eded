"""Starting a run: where its directory goes, what may be replaced, and the loop itself — for the CLI and the Python API.

`prepare` (a new run) and `prepare_resume` (an existing run directory) decide
everything that can fail before any work: the config builds within this
machine's memory, its data loads, the run directory may be written. Nothing is
created or deleted until all of that holds. `execute` runs the loop, mirroring
to a URI when the location is one; an OSError there (a full disk, a folder
turned read-only) becomes a one-line `EnvironmentProblem`. `--overwrite`
deletes only a somna run directory (recognised by its config.yaml), never the
current directory or one of its parents, and never a folder that holds
anything else.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from somna.evals.rundir import CONFIG_FILE, is_run_dir
from somna.platform.builders import build_curriculum, build_learner
from somna.platform.config import ConfigError, EnvironmentProblem, first_line, load_config, run_name
from somna.platform.errors import environment_problem
from somna.platform.memory_budget import AllocationBudget, available_memory
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
    check_writable(run_dir)
    exists = run_dir.exists() and any(run_dir.iterdir())
    _refuse_existing(location, exists, overwrite, resume)
    if overwrite and exists:
        check_replaceable(run_dir)
        shutil.rmtree(run_dir)
    return Launch(cfg, run_dir, location, resume and exists)


def prepare_resume(location: str, overrides: list[str] | None = None) -> Launch:
    """A run directory (a path or a URI) ready to continue with its own config.yaml (plus `overrides`)."""
    local, remote = Path(location), None
    if is_uri(location):
        remote = RemoteRunDirectory(location)
        if not remote.exists():
            raise ConfigError(f"cannot resume {location}: nothing there")
        local = remote.pull()
    if not (local / CONFIG_FILE).is_file():
        raise ConfigError(f"cannot resume {location}: no {CONFIG_FILE} there")
    cfg = load_config(str(local / CONFIG_FILE), overrides)
    check_buildable(cfg)
    if remote is None:
        check_writable(local)
    return Launch(cfg, local, location, resume=True, remote=remote)


def _refuse_existing(location: str, exists: bool, overwrite: bool, resume: bool) -> None:
    if exists and not (overwrite or resume):
        raise ConfigError(f"run directory {location} already exists; pass --resume to continue it or --overwrite to replace it")


def check_writable(run_dir: Path) -> None:
    """The run directory, or the folder it will be created in, can be written (a read-only --out fails here, not midway)."""
    existing = next(folder for folder in (run_dir, *run_dir.absolute().parents) if folder.exists())
    if not existing.is_dir():
        raise ConfigError(f"cannot create run directory {run_dir}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise EnvironmentProblem(
            f"cannot write run directory {run_dir}: {existing} is not writable (read-only or no permission); "
            f"choose another --out or fix its permissions"
        )


def check_replaceable(path: Path) -> None:
    """A directory --overwrite may delete: a somna run directory that is not the current directory or above it."""
    resolved, here = path.resolve(), Path.cwd().resolve()
    if resolved == here or resolved in here.parents:
        raise ConfigError(f"--overwrite refuses to delete {path}: it is the current directory or one of its parents")
    if not is_run_dir(path):
        raise ConfigError(f"--overwrite refuses to delete {path}: it is not a somna run directory (no config.yaml); remove it yourself")


def check_buildable(cfg: DictConfig) -> None:
    """Build the curriculum and the learner once here, within this machine's memory, so that bad sizes, bad data
    and an unreachable dataset fail before Ray starts or a run directory is made."""
    from somna.platform.pretraining import resolve_base

    learner = f"learner {cfg.learner.name!r}"
    try:
        with torch.random.fork_rng():
            with AllocationBudget(available_memory(), learner):
                info = build_curriculum(cfg).info
            resolve_base(cfg.learner)  # a pretrain preset named as the base is pretrained (once, cached) here, outside the budget
            with AllocationBudget(available_memory(), learner):
                build_learner(cfg, info)
    except (ConfigError, EnvironmentProblem):
        raise
    except UnknownNameError as error:
        raise ConfigError(str(error)) from None
    except FileNotFoundError as error:  # e.g. curriculum.hf_dataset names a folder that holds no dataset
        raise ConfigError(f"curriculum {cfg.curriculum.name!r}: {first_line(error)}") from None
    except OSError as error:
        raise environment_problem(error, f"cannot load the data of curriculum {cfg.curriculum.name!r}", "run it again") from None
    except (ValueError, TypeError) as error:
        raise ConfigError(first_line(error)) from None
    except (RuntimeError, MemoryError) as error:  # torch refusing a shape, or an allocation the budget could not see
        raise ConfigError(f"cannot build {learner}: {first_line(error)}") from None


def execute(launch: Launch, progress: RunProgress | None = None) -> dict[str, Any]:
    """Run (or resume) the loop into the launch's directory; a remote copy is pushed after every experience."""
    remote = launch.remote
    push: Callable[[int], None] | None = (lambda experience: remote.push()) if remote is not None else None
    try:
        return run(launch.cfg, launch.run_dir, resume=launch.resume, progress=progress, on_experience_end=push)
    except OSError as error:
        then = f"continue with `somna resume {launch.location}`" if is_run_dir(launch.run_dir) else "run it again"
        raise environment_problem(error, f"cannot write run directory {launch.location}", then) from error
    finally:
        if remote is not None and launch.run_dir.is_dir():
            remote.push()  # whatever was committed, even when the run stopped early
