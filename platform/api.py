"""The Python API (`import somna`): run an experiment from a notebook and read its results.

    import somna
    run = somna.run("split-digits", learner="replay", seed=3)            # same as `somna run ...`
    run.summary["acc"], run.matrix                                      # summary.json, accuracy matrix R
    run = somna.run("split-digits", "learner.buffer=500", learner="replay", executor="inline")
    old = somna.load_run("runs/split-digits-replay-s3")                 # any run directory, even a partial one

Keyword arguments are top-level overrides (`learner=`, `seed=`, `scenario=`,
`executor=` ...); dotted keys go in as "key=value" strings, exactly as on the
command line. The same validation, run directory and loop as the CLI; errors
are `ConfigError` with the CLI's one-line message.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from somna.evals.rundir import Run, load_run
from somna.platform.config import load_config
from somna.platform.launch import execute, prepare


def config(source: str = "split-digits", *overrides: str, **fields: Any) -> DictConfig:
    """The resolved, validated config of a preset, a registered curriculum or a YAML file, with overrides."""
    return load_config(source, [*overrides, *(f"{key}={value}" for key, value in fields.items())])


def run(
    source: str = "split-digits",
    *overrides: str,
    out: str | Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
    **fields: Any,
) -> Run:
    """Run (or resume) one experiment to the end and return its run directory, read back.

    `out` defaults to `<storage_path>/<curriculum>-<learner>-s<seed>`, as on the CLI; an
    existing run directory needs `overwrite=True` or `resume=True`."""
    launch = prepare(config(source, *overrides, **fields), None if out is None else str(out), overwrite=overwrite, resume=resume)
    execute(launch)
    return load_run(launch.run_dir)


def package_version() -> str:
    try:
        return version("somna")
    except PackageNotFoundError:  # imported from a source tree that was never installed
        return "unknown"


__all__ = ["Run", "config", "load_run", "package_version", "run"]
