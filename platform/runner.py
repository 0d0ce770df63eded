"""The driver: walk the curriculum, wake -> sleep -> evaluate every experience -> one accuracy-matrix row.

Each experience ends with a checkpoint and then its events in metrics.jsonl;
the `experience_end` event is the commit point. Resuming drops the events of
an unfinished experience, reloads the last good checkpoint and redoes the rest,
so an interrupted run ends with the same metrics and the same events as an
uninterrupted one. A learner actor that dies is rebuilt from the last
checkpoint the same way, up to `max_actor_restarts` times.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from somna.evals.metrics import skill_retention, summarize
from somna.evals.rundir import BASELINE, COMMIT_EVENT, CheckpointError, accuracy_rows, skill_rows
from somna.evals.tracking import make_sinks
from somna.platform.builders import build_curriculum, build_learner
from somna.platform.config import ConfigError, to_yaml
from somna.platform.executors import actor_died_errors, make_executor
from somna.platform.rundir import RunDirectory

__all__ = ["build_curriculum", "build_learner", "run", "RunProgress"]
log = logging.getLogger(__name__)

# may differ on resume: they change where and how a run executes, not its results
RESUME_IGNORED_KEYS = ("executor", "ray", "logging", "resources", "storage_path")


class RunProgress:
    """Callbacks the CLI uses to show progress; the default shows nothing."""

    def start(self, total: int, done: int) -> None: ...
    def phase(self, experience: int, phase: str) -> None: ...
    def advance(self) -> None: ...
    def stop(self) -> None: ...


def _config_for_comparison(cfg: DictConfig) -> dict[str, Any]:
    data = OmegaConf.to_container(cfg, resolve=True)
    return {k: v for k, v in data.items() if k not in RESUME_IGNORED_KEYS}


def check_resume_config(run_dir: RunDirectory, cfg: DictConfig) -> None:
    if not run_dir.config_path.exists():
        raise ConfigError(f"cannot resume {run_dir.path}: it has no config.yaml")
    saved = OmegaConf.load(run_dir.config_path)
    if _config_for_comparison(saved) != _config_for_comparison(cfg):
        raise ConfigError(f"cannot resume {run_dir.path}: its config.yaml differs from the given config")


def run(
    cfg: DictConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    progress: RunProgress | None = None,
    on_experience_end: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) one lifelong-learning run into `run_dir`; return the summary."""
    progress = progress or RunProgress()
    directory = RunDirectory(run_dir)
    curriculum = build_curriculum(cfg)
    total = len(curriculum)
    if resume:
        check_resume_config(directory, cfg)
    else:
        directory.path.mkdir(parents=True, exist_ok=True)
        directory.write_config(to_yaml(cfg))
        directory.append_events([{"event": "run_start", "experience": BASELINE, "num_experiences": total}])

    start, state = _restore(directory)
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
                experience, state = _restore(directory, upto=experience)
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

    summary = {
        **summarize(np.array(rows), np.array(baseline)),
        **skill_retention(skill_rows(directory.read_events()), BASELINE),  # text runs: the base's skills kept (none on vector runs)
        "learner": cfg.learner.name,
        "curriculum": cfg.curriculum.name,
        "scenario": cfg.scenario,
        "seed": int(cfg.seed),
        "num_experiences": total,
    }
    directory.write_summary(summary)
    return summary


def _restore(directory: RunDirectory, upto: int | None = None) -> tuple[int, dict[str, Any] | None]:
    """(first experience to run, learner state to start from), from the last good checkpoint.

    A corrupt checkpoint is reported and the one before it used; the events of
    everything after the restored point are dropped so they are redone once.
    """
    committed = directory.completed_experiences() if upto is None else upto
    for experience in range(committed - 1, -1, -1):
        try:
            state = directory.load_checkpoint(experience)
        except CheckpointError as error:
            log.warning("%s; falling back to the previous checkpoint", error)
            continue
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
