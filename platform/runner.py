"""The driver: walk the curriculum, wake -> sleep -> evaluate every experience -> one accuracy-matrix row.

Each experience ends with a checkpoint and then its events in metrics.jsonl;
the `experience_end` event is the commit point. Resuming drops the events of
an unfinished experience, reloads the last good checkpoint and redoes the rest,
so an interrupted run ends with the same metrics and the same events as an
uninterrupted one. A learner actor that dies is rebuilt from the last
checkpoint the same way, up to `max_actor_restarts` times.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from somna.evals.metrics import skill_retention, summarize
from somna.evals.rundir import (
    BASELINE,
    COMMIT_EVENT,
    EVENTS_FILE,
    CheckpointError,
    accuracy_rows,
    committed,
    read_config,
    read_events,
    skill_rows,
)
from somna.evals.tracking import make_sinks
from somna.platform.builders import build_curriculum, build_learner
from somna.platform.config import ConfigError, to_yaml
from somna.platform.errors import one_line
from somna.platform.executors import actor_died_errors, make_executor
from somna.platform.rundir import RunDirectory

__all__ = ["build_curriculum", "build_learner", "run", "RunProgress"]
log = logging.getLogger(__name__)

# may differ on resume: they change where and how a run executes, not its results
RESUME_IGNORED_KEYS = ("executor", "ray", "logging", "resources", "storage_path")
CONFIG_DIGEST = "config_sha256"  # the run_start event's record of the settings the run started with
MAX_REASON = 240  # characters of a library's error kept in a one-line message


class RunProgress:
    """Callbacks the CLI uses to show progress; the default shows nothing."""

    def start(self, total: int, done: int) -> None: ...
    def phase(self, experience: int, phase: str) -> None: ...
    def advance(self) -> None: ...
    def stop(self) -> None: ...


def _config_for_comparison(cfg: DictConfig) -> dict[str, Any]:
    data = OmegaConf.to_container(cfg, resolve=True)
    return {k: v for k, v in data.items() if k not in RESUME_IGNORED_KEYS}


def config_digest(cfg: DictConfig) -> str:
    """sha256 of the settings that decide a run's results; the `run_start` event records it, so an edit is caught."""
    return hashlib.sha256(json.dumps(_config_for_comparison(cfg), sort_keys=True).encode()).hexdigest()


def check_resume_config(run_dir: RunDirectory, cfg: DictConfig) -> None:
    """`cfg` is the config saved in the run directory, and config.yaml still holds what the run started with."""
    saved = OmegaConf.create(read_config(run_dir.path))
    if _config_for_comparison(saved) != _config_for_comparison(cfg):
        raise ConfigError(f"cannot resume {run_dir.path}: its config.yaml differs from the given config")
    started = next((e.get(CONFIG_DIGEST) for e in run_dir.read_events() if e["event"] == "run_start"), None)
    if started is not None and started != config_digest(cfg):
        raise ConfigError(
            f"cannot resume {run_dir.path}: its config.yaml was edited after the run started (the settings no longer "
            f"match the {CONFIG_DIGEST} of its run_start event); put back what it started with, or start over with --overwrite"
        )


class CheckpointMismatch(ConfigError):
    """A checkpoint whose checksum holds but whose tensors the configured learner cannot load (another learner's, edited)."""


def check_state_fits(cfg: DictConfig, info: Any, state: dict[str, Any], source: Path) -> None:
    """Load `state` into a fresh learner here, so that a checkpoint that does not fit is one line, not a worker's traceback."""
    with torch.random.fork_rng():
        learner = build_learner(cfg, info)
    try:
        learner.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError) as error:
        reason = one_line(error)
        reason = reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 3] + "..."
        raise CheckpointMismatch(f"{source}: does not fit learner {cfg.learner.name!r} ({reason})") from None


def run(
    cfg: DictConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    progress: RunProgress | None = None,
    on_experience_end: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) one lifelong-learning run into `run_dir`; return the summary.

    A new run that fails before it commits anything leaves its folder as it found it (absent or empty), so that
    running it again is not refused as "already exists"."""
    directory = RunDirectory(run_dir)
    curriculum = build_curriculum(cfg)
    if resume:
        check_resume_config(directory, cfg)
        return _loop(cfg, directory, curriculum, progress or RunProgress(), on_experience_end)
    with _discarded_unless_committed(directory.path):
        directory.path.mkdir(parents=True, exist_ok=True)
        directory.write_config(to_yaml(cfg))
        start = {"event": "run_start", "experience": BASELINE, "num_experiences": len(curriculum), CONFIG_DIGEST: config_digest(cfg)}
        directory.append_events([start])
        return _loop(cfg, directory, curriculum, progress or RunProgress(), on_experience_end)


@contextmanager
def _discarded_unless_committed(path: Path) -> Iterator[None]:
    """On failure before the first commit, remove what was written into `path` (and `path`, if it was created here).

    A folder that already held something is never touched."""
    existed = path.exists()
    if existed and any(path.iterdir()):
        yield
        return
    try:
        yield
    except BaseException:
        events, _ = read_events(path / EVENTS_FILE)
        if not committed(events):
            for child in path.iterdir() if path.is_dir() else ():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
            if not existed and path.is_dir():
                path.rmdir()
        raise


def _loop(
    cfg: DictConfig, directory: RunDirectory, curriculum: Any, progress: RunProgress,
    on_experience_end: Callable[[int], None] | None,
) -> dict[str, Any]:
    """From the last good checkpoint to the end of the stream: wake, sleep, evaluate and commit each experience."""
    total = len(curriculum)
    fits = _resumable_checkpoint(cfg, curriculum.info, directory)
    start, state = _restore(directory, fits)
    baseline, rows = accuracy_rows(directory.read_events(), total)
    directory.mirrors = make_sinks(directory.path, cfg.logging.tensorboard, cfg.logging.mlflow)
    executor = make_executor(cfg, curriculum)
    restarts = 0
    progress.start(total, start)
    actor_name = f"somna-learner:{directory.path.resolve()}"
    try:
        executor.start(state, name=actor_name)
        if baseline is None:
            baseline = _evaluate_baseline(directory, executor)
            directory.write_matrix(baseline, rows)
        experience = start
        while experience < total:
            try:
                rows.append(_experience(directory, executor, experience, progress))
            except actor_died_errors() as error:
                restarts += 1
                if restarts > cfg.max_actor_restarts:
                    raise
                log.warning("learner actor died during experience %d (%s); restarting from checkpoint", experience, error)
                # the checkpoint before `experience` may itself be corrupt: go back as far as _restore did
                experience, state = _restore(directory, fits, upto=experience)
                del rows[experience:]
                executor.start(state, name=actor_name)
                directory.append_events([{"event": "actor_restart", "experience": experience, "restart": restarts}])
                continue
            directory.write_matrix(baseline, rows)
            progress.advance()
            if on_experience_end is not None:
                on_experience_end(experience)
            experience += 1
    finally:
        executor.close()
        progress.stop()
        for mirror in directory.mirrors:
            mirror.close()

    return _write_summary(cfg, directory, rows, baseline)


def _resumable_checkpoint(cfg: DictConfig, info: Any, directory: RunDirectory) -> Callable[[dict[str, Any], int], None]:
    """The check `_restore` runs on a sound checkpoint: does the learner load it? (One line saying what to do, if not.)"""

    def fits(state: dict[str, Any], experience: int) -> None:
        try:
            check_state_fits(cfg, info, state, directory.checkpoint_path(experience))
        except CheckpointMismatch as error:
            raise CheckpointMismatch(
                f"cannot resume {directory.path}: checkpoint {error}; put it back as it was, or delete it to redo "
                f"experience {experience} from the checkpoint before"
            ) from None

    return fits


def _write_summary(cfg: DictConfig, directory: RunDirectory, rows: list[list[float]], baseline: list[float]) -> dict[str, Any]:
    summary = {
        **summarize(np.array(rows), np.array(baseline)),
        **skill_retention(skill_rows(directory.read_events()), BASELINE),  # text runs: the base's skills kept (none on vector runs)
        "learner": cfg.learner.name,
        "curriculum": cfg.curriculum.name,
        "scenario": cfg.scenario,
        "seed": int(cfg.seed),
        "num_experiences": len(baseline),
    }
    directory.write_summary(summary)
    return summary


def _restore(
    directory: RunDirectory, fits: Callable[[dict[str, Any], int], None], upto: int | None = None
) -> tuple[int, dict[str, Any] | None]:
    """(first experience to run, learner state to start from), from the last good checkpoint.

    A corrupt checkpoint is reported and the one before it used; the events of
    everything after the restored point are dropped so they are redone once. A
    checkpoint that is sound but does not fit the learner (`fits` raises) stops
    the resume before anything is dropped.
    """
    done = directory.completed_experiences() if upto is None else upto
    for experience in range(done - 1, -1, -1):
        try:
            state = directory.load_checkpoint(experience)
        except CheckpointError as error:
            log.warning("%s; falling back to the previous checkpoint", error)
            continue
        fits(state, experience)
        directory.truncate_uncommitted(experience + 1)
        return experience + 1, state
    directory.truncate_uncommitted(0)
    return 0, None


def _eval_events(kind: str, experience: int, results: list[tuple[dict[str, float], str]], wall_s: float) -> list[dict]:
    return [
        {"event": kind, "experience": experience, "target": j, "metrics": metrics, "node_id": node, "wall_s": wall_s}
        for j, (metrics, node) in enumerate(results)
    ]


def _evaluate_baseline(directory: RunDirectory, executor: Any) -> list[float]:
    started = time.perf_counter()
    results = executor.evaluate_all(executor.state_dict())
    events = _eval_events("baseline_eval", BASELINE, results, time.perf_counter() - started)
    directory.append_events([*events, {"event": COMMIT_EVENT, "experience": BASELINE}])
    return [metrics["accuracy"] for metrics, _ in results]


def _experience(directory: RunDirectory, executor: Any, experience: int, progress: RunProgress) -> list[float]:
    """Wake, sleep, evaluate and commit one experience; return its accuracy row."""
    progress.phase(experience, "wake")
    started = time.perf_counter()
    wake_metrics, wake_node = executor.wake(experience)
    wake_s = time.perf_counter() - started

    progress.phase(experience, "sleep")
    started = time.perf_counter()
    sleep_metrics = executor.sleep(experience, str(directory.artifacts_dir(experience)))
    sleep_s = time.perf_counter() - started

    progress.phase(experience, "eval")
    started = time.perf_counter()
    state = executor.state_dict()
    results = executor.evaluate_all(state)
    eval_s = time.perf_counter() - started

    directory.save_checkpoint(experience, state, {"learner": executor.cfg_dict["learner"]["name"]})
    directory.append_events(
        [
            {"event": "wake", "experience": experience, "metrics": wake_metrics, "node_id": wake_node, "wall_s": wake_s},
            {"event": "sleep", "experience": experience, "metrics": sleep_metrics, "wall_s": sleep_s},
            *_eval_events("eval", experience, results, eval_s),
            {"event": COMMIT_EVENT, "experience": experience},
        ]
    )
    return [metrics["accuracy"] for metrics, _ in results]
