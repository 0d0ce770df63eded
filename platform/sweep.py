"""`somna sweep`: a grid of runs as Ray Tune trials, resumable, ending in a `compare` table.

`somna sweep split-digits learner=finetune,replay seed=0,1,2 --out DIR` makes
one trial per combination and one run directory per trial, named from the
grid's overrides (`DIR/learner=replay,seed=1`). The trial is the Ray unit: it
runs the whole loop inline (`executor=inline`) with the resources the config
gives the learner (`resources.wake`, default 1 CPU), and Ray runs as many
trials at once as the cluster has room for. A trial whose directory already
holds a finished run of the same config is not run again; a half-finished one
is resumed. On a cluster (`--address`), DIR must be shared storage.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from omegaconf import DictConfig
from ray import tune

from somna.evals.compare import compare
from somna.platform import local_ray
from somna.platform.config import ConfigError, load_config, parse_yaml
from somna.platform.executors import join_cluster
from somna.platform.runner import check_resume_config, run
from somna.platform.rundir import RunDirectory

SUMMARY_KEYS = ("acc", "bwt", "fwt", "forgetting")
TRIAL_OVERRIDES = ["executor=inline", "logging.progress=false"]  # the trial is the Ray unit; no nested Ray, no bars
TUNE_DIR = ".tune"


@dataclass(frozen=True)
class Trial:
    """One grid point: its run directory and the overrides (fixed ones first) that configure it."""

    name: str
    run_dir: Path
    overrides: tuple[str, ...]


def split_values(value: str) -> list[str]:
    """`a,b,[1,2]` -> ['a', 'b', '[1,2]']: commas split values except inside brackets or braces."""
    values, depth, current = [], 0, ""
    for char in value:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            values.append(current)
            current = ""
        else:
            current += char
    return values + [current]


def parse_grid(arguments: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """(fixed overrides, grid axes key -> values) from `key=value` and `key=a,b,c` arguments."""
    fixed, axes = [], {}
    for argument in arguments:
        key, separator, value = argument.partition("=")
        if not separator or not key:
            raise ConfigError(f"bad sweep argument {argument!r}: expected key=value or key=a,b,c")
        values = split_values(value)
        if len(values) == 1:
            fixed.append(argument)
        elif key in axes or any(not v for v in values):
            raise ConfigError(f"bad sweep axis {argument!r}: repeated key or empty value")
        else:
            axes[key] = values
    return fixed, axes


def load_variants(path: Path) -> dict[str, list[str]]:
    """A variants file: a YAML mapping of label -> list of overrides (an ablation table's rows)."""
    try:
        text = Path(path).read_text()
    except OSError:
        raise ConfigError(f"variants file not found: {path}") from None
    data = parse_yaml(text, path)
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{path} must map variant labels to lists of overrides")
    variants = {}
    for label, overrides in data.items():
        overrides = overrides or []
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", str(label)) or not isinstance(overrides, list):
            raise ConfigError(f"{path}: variant {label!r} needs a label of letters, digits, _.+- and a list of overrides")
        variants[str(label)] = [str(item) for item in overrides]
    return variants


def expand(fixed: list[str], axes: dict[str, list[str]], out_dir: Path, variants: dict[str, list[str]] | None = None) -> list[Trial]:
    """Every variant (or just the fixed overrides) times the cartesian product of the axes, in the order given.

    A variant's overrides come after the fixed ones, and `variant=<label>` records it in the run's config."""
    trials = []
    for label, overrides in (variants or {None: []}).items():
        for combination in itertools.product(*axes.values()):
            grid = [f"{key}={value}" for key, value in zip(axes, combination)]
            tag = [f"variant={label}"] if label is not None else []
            name = ",".join(tag + grid).replace("/", "_") or "default"
            trials.append(Trial(name, out_dir / name, tuple(fixed + overrides + tag + grid)))
    return trials


def trial_state(trial: Trial, cfg: DictConfig) -> str:
    """'new', 'done' (complete summary.json, same config), or 'partial' (same config, unfinished: resume it)."""
    directory = RunDirectory(trial.run_dir)
    if not directory.config_path.exists():
        return "new"
    try:
        check_resume_config(directory, cfg)
    except ConfigError:
        raise ConfigError(
            f"{trial.run_dir} holds a run with a different config; delete it or pick another --out"
        ) from None
    summary = _read_summary(directory)
    return "done" if summary and all(key in summary for key in SUMMARY_KEYS) else "partial"


def _read_summary(directory: RunDirectory) -> dict[str, Any] | None:
    try:
        return json.loads(directory.summary_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def run_trial(config: dict[str, Any]) -> None:
    """Tune's function trainable (config = one grid point {"spec": ...}): one whole run, inline, reported once."""
    spec = config["spec"]
    cfg = load_config(spec["source"], list(spec["overrides"]) + TRIAL_OVERRIDES)
    summary = run(cfg, Path(spec["run_dir"]), resume=spec["resume"])
    tune.report({key: value for key, value in summary.items() if isinstance(value, (int, float))})


def run_sweep(
    source: str,
    arguments: list[str],
    out_dir: Path,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    by: list[str] | None = None,
    variants: dict[str, list[str]] | None = None,
) -> tuple[Any, dict[str, Path], list[str]]:
    """Run every unfinished trial on Ray Tune, then compare all trials.

    Returns (comparison, written paths, names of failed trials). Every config
    is validated before Ray starts, so a typo fails at once.
    """
    if Path(source).is_file():
        source = str(Path(source).resolve())  # Tune runs trials in other working directories
    out_dir = Path(out_dir).resolve()
    fixed, axes = parse_grid(arguments)
    trials = expand(fixed, axes, out_dir, variants)
    states = {trial.name: trial_state(trial, load_config(source, list(trial.overrides))) for trial in trials}
    pending = [trial for trial in trials if states[trial.name] != "done"]
    for trial in trials:
        if states[trial.name] == "done":
            print(f"sweep: {trial.name}: finished earlier, not rerun", flush=True)
    print(f"sweep: {len(trials)} trials, {len(pending)} to run → {out_dir}", flush=True)
    failed = _tune(source, pending, states, out_dir, address, num_cpus) if pending else []

    finished = [trial.run_dir for trial in trials if trial.name not in failed]
    group_keys = by or (["variant"] if variants else []) + [key for key in axes if key != "seed"] or ["learner"]
    comparison, paths = compare(finished, by=group_keys, out_dir=out_dir) if finished else (None, {})
    return comparison, paths, failed


def _tune(
    source: str, pending: list[Trial], states: dict[str, str], out_dir: Path, address: str | None, num_cpus: int | None
) -> list[str]:
    """Run the pending trials in parallel; returns the names of the trials that failed."""
    resources = load_config(source, list(pending[0].overrides)).resources.wake
    specs = [
        {"source": source, "overrides": list(t.overrides), "run_dir": str(t.run_dir), "resume": states[t.name] == "partial", "name": t.name}
        for t in pending
    ]
    started_ray = not ray.is_initialized()
    if started_ray:
        if address:
            join_cluster(address)
        else:
            local_ray.start(num_cpus)
    try:
        tuner = tune.Tuner(
            tune.with_resources(run_trial, {"cpu": resources.num_cpus, "gpu": resources.num_gpus}),
            param_space={"spec": tune.grid_search(specs)},
            tune_config=tune.TuneConfig(trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
            run_config=tune.RunConfig(
                name="sweep", storage_path=str(out_dir / TUNE_DIR), verbose=0, callbacks=[SweepProgress(len(pending))]
            ),
        )
        results = tuner.fit()
    finally:
        if started_ray:
            local_ray.shutdown()
    return [result.config["spec"]["name"] for result in results if result.error is not None]


def _trial_name(trial: Any) -> str:
    return trial.config["spec"]["name"]


class SweepProgress(tune.Callback):
    """One line per trial start, finish and failure, with counts and wall time (Tune's own table is off)."""

    def __init__(self, total: int):
        self.total, self.finished, self.started_at = total, 0, {}

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.started_at[trial.trial_id] = time.perf_counter()
        print(f"sweep: started {_trial_name(trial)}", flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._finished(trial, "done")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._finished(trial, "FAILED")

    def _finished(self, trial: Any, status: str) -> None:
        self.finished += 1
        seconds = time.perf_counter() - self.started_at.get(trial.trial_id, time.perf_counter())
        acc = (trial.last_result or {}).get("acc")
        detail = f" acc={acc:.4f}" if isinstance(acc, float) else ""
        print(f"sweep: [{self.finished}/{self.total}] {_trial_name(trial)} {status}{detail} ({seconds:.0f} s)", flush=True)
