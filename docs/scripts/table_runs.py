"""Seeded runs of vector learners for the digit tables: in process (spread over workers, cached) or through `somna run`.

`run_once` goes through the platform's loop order (b = evaluate before
training; per experience: wake -> sleep -> evaluate every experience) and is
summarized by somna.evals.metrics, so a table cell is what `somna run` prints
for that config and seed. `run_all` spreads runs over `--workers` processes
(one torch thread each, timed on that thread) and appends every finished run to
a JSON-lines cache, so an interrupted table resumes where it stopped.
`somna_run` is the platform's own runner (inline executor, a scratch run
directory), for tables whose rows are commands.
"""

from __future__ import annotations

import json
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

import somna.curricula  # noqa: F401  (registers the curricula)
import somna.learners  # noqa: F401  (registers the learners)
from somna.evals import metrics
from somna.evals.stats import mean_ci
from somna.learners.base import SleepContext, phase_seed
from somna.platform.builders import seed_everything
from somna.platform.config import load_config
from somna.platform.registry import CURRICULA, LEARNERS
from somna.platform.runner import run

# What identifies one run: (learner, learner overrides, curriculum, curriculum overrides, scenario, seed)
RunSpec = tuple[str, dict[str, Any], str, dict[str, Any], str, int]


def run_once(
    learner_name: str, overrides: dict[str, Any], curriculum_name: str, curriculum_overrides: dict[str, Any], scenario: str, seed: int
) -> dict[str, float]:
    """One seeded run: accuracy matrix -> ACC/BWT/FWT/forgetting, plus its wall time on one torch thread."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    curriculum_cls = CURRICULA.get(curriculum_name)
    curriculum_config = OmegaConf.merge(OmegaConf.structured(curriculum_cls.Config), curriculum_overrides)
    curriculum = curriculum_cls(curriculum_config, scenario=scenario, seed=seed)
    learner_cls = LEARNERS.resolve(learner_name, "vector")
    learner = learner_cls(OmegaConf.merge(OmegaConf.structured(learner_cls.Config), overrides), curriculum.info, seed)
    b = np.array([learner.evaluate(e)["accuracy"] for e in curriculum])
    R = np.zeros((len(curriculum), len(curriculum)))
    for i, experience in enumerate(curriculum):
        seed_everything(phase_seed(seed, i, "wake"))  # the global RNGs as the platform sets them per phase
        learner.wake(experience)
        seed_everything(phase_seed(seed, i, "sleep"))
        learner.sleep(SleepContext(experience=experience, num_experiences=len(curriculum), seed=seed))
        R[i] = [learner.evaluate(e)["accuracy"] for e in curriculum]
    return metrics.summarize(R, b) | {"wall_s": time.perf_counter() - start}


def run_all(specs: dict[str, RunSpec], workers: int, cache: Path | None = None) -> dict[str, dict[str, float]]:
    """Every spec's summary by its key: cached ones read back, the rest run (and cached) here or on `workers` processes."""
    results = load_cache(cache)
    missing = {key: spec for key, spec in specs.items() if key not in results}

    def finished(key: str, result: dict[str, float]) -> None:
        results[key] = result
        if cache is not None:
            with cache.open("a") as file:
                file.write(json.dumps({"key": key, "result": result}) + "\n")

    if workers == 1:
        for key, spec in missing.items():
            finished(key, run_once(*spec))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            jobs = {pool.submit(run_once, *spec): key for key, spec in missing.items()}
            for job in as_completed(jobs):
                finished(jobs[job], job.result())
    return {key: results[key] for key in specs}


def load_cache(cache: Path | None) -> dict[str, dict[str, float]]:
    if cache is None or not cache.exists():
        return {}
    rows = [json.loads(line) for line in cache.read_text().splitlines() if line.strip()]
    return {row["key"]: row["result"] for row in rows}


def cell(runs: list[dict[str, float]], metric: str) -> str:
    """'mean ± 95% t-CI' of one metric over runs (the bare value for one run)."""
    return mean_ci(run[metric] for run in runs).format()


def somna_run(config: str, overrides: list[str]) -> dict[str, float]:
    """`somna run CONFIG OVERRIDES executor=inline`: its summary.json, plus the run's wall seconds."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        summary = run(load_config(config, [*overrides, "executor=inline", "logging.progress=false"]), Path(scratch) / "run")
    return summary | {"wall_s": time.perf_counter() - start}
