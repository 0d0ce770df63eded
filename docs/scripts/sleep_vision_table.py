"""The vision sleep learner with and without each stage, next to the digit baselines, over seeds.

Each run goes through the platform's loop order in-process (b = evaluate before
training; per experience: wake -> sleep(SleepContext) -> evaluate every
experience) and is summarized by somna.evals.metrics; cells are mean ± 95% t-CI
over seeds. Runs are independent, so they spread over `--workers` processes
(one torch thread each); each finished run is appended to a JSON-lines cache,
so an interrupted table resumes where it stopped. The tables replace the block between the markers in
docs/sleep_vision_results.md, leaving the hand-written analysis around it.

    .venv/bin/python docs/scripts/sleep_vision_table.py [--seeds 0 1 2] [--workers 2] [--quick] [--cached-only]
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from scipy import stats

import somna.curricula  # noqa: F401  (registers the curricula)
import somna.learners  # noqa: F401  (registers the learners)
from somna.evals import metrics
from somna.learners.base import SleepContext
from somna.platform.registry import CURRICULA, LEARNERS

ALL_STAGES = ["expansion", "knowledge-seeding", "dreaming"]
SLEEP_VARIANTS: dict[str, tuple[str, dict[str, Any], str]] = {  # label -> (learner, overrides, stored data)
    "sleep (all stages)": ("sleep", {}, "none"),
    "sleep − expansion": ("sleep", {"sleep": {"stages": ["knowledge-seeding", "dreaming"]}}, "none"),
    "sleep − knowledge seeding": ("sleep", {"sleep": {"stages": ["expansion", "dreaming"]}}, "none"),
    "sleep − dreaming": ("sleep", {"sleep": {"stages": ["expansion", "knowledge-seeding"]}}, "none"),
    "sleep, wake only (no stage)": ("sleep", {"sleep": {"stages": []}}, "none"),
}
BASELINES: dict[str, tuple[str, dict[str, Any], str]] = {
    "finetune": ("finetune", {}, "none"),
    "ewc": ("ewc", {}, "Fisher + old weights"),
    "lwf": ("lwf", {}, "previous model"),
    "der (200)": ("der", {"buffer": 200}, "200 examples + logits"),
    "replay (200)": ("replay", {"buffer": 200}, "200 examples"),
    "joint (upper bound)": ("joint", {}, "all data"),
}
STREAMS = {  # label -> (curriculum, scenario, which sleep variants)
    "class-IL split-digits": ("split-digits", "class", list(SLEEP_VARIANTS)),
    "domain-IL permuted-digits": ("permuted-digits", "domain", ["sleep (all stages)", "sleep, wake only (no stage)"]),
}
MARK_START, MARK_END = "<!-- sleep-vision-table:start -->", "<!-- sleep-vision-table:end -->"


def run_once(learner_name: str, overrides: dict[str, Any], curriculum_name: str, scenario: str, seed: int) -> dict[str, float]:
    """One seeded run: accuracy matrix -> ACC/BWT/FWT/forgetting, plus its wall time."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    curriculum_cls = CURRICULA.get(curriculum_name)
    curriculum = curriculum_cls(OmegaConf.structured(curriculum_cls.Config), scenario=scenario, seed=seed)
    learner_cls = LEARNERS.resolve(learner_name, "vector")
    config = OmegaConf.merge(OmegaConf.structured(learner_cls.Config), overrides)
    learner = learner_cls(config, curriculum.info, seed)
    b = np.array([learner.evaluate(e)["accuracy"] for e in curriculum])
    R = np.zeros((len(curriculum), len(curriculum)))
    for i, experience in enumerate(curriculum):
        learner.wake(experience)
        learner.sleep(SleepContext(experience=experience, num_experiences=len(curriculum), seed=seed))
        R[i] = [learner.evaluate(e)["accuracy"] for e in curriculum]
    return metrics.summarize(R, b) | {"wall_s": time.perf_counter() - start}


def mean_ci(values: list[float]) -> str:
    mean = float(np.mean(values))
    if len(values) < 2:
        return f"{mean:.3f}"
    half = float(stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values)))
    return f"{mean:.3f} ± {half:.3f}"


def tables(seeds: list[int], workers: int, streams: dict[str, tuple[str, str, list[str]]], cache: Path, run_missing: bool = True) -> str:
    """Run what `cache` (one JSON line per finished run) lacks, then format every stream's table."""
    results = load_cache(cache)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        jobs = {}
        for seed in seeds if run_missing else []:  # seed-major: a partial run still gives whole tables
            for stream, (curriculum_name, scenario, variants) in streams.items():
                methods = {label: SLEEP_VARIANTS[label] for label in variants} | BASELINES
                for label, (learner_name, overrides, _) in methods.items():
                    if (stream, label, seed) not in results:
                        job = pool.submit(run_once, learner_name, overrides, curriculum_name, scenario, seed)
                        jobs[job] = (stream, label, seed)
        for job in as_completed(jobs):
            results[jobs[job]] = job.result()
            with cache.open("a") as file:
                file.write(json.dumps({"key": list(jobs[job]), "result": results[jobs[job]]}) + "\n")
    blocks = []
    for stream, (_, _, variants) in streams.items():
        methods = {label: SLEEP_VARIANTS[label] for label in variants} | BASELINES
        lines = [
            f"### {stream} (mean ± 95% t-CI over the seeds listed)",
            "",
            "| method | stored past data | seeds | ACC | BWT | forgetting | wall s/run |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        for label, (_, _, stored) in methods.items():
            done = [seed for seed in seeds if (stream, label, seed) in results]
            runs = [results[stream, label, seed] for seed in done]
            if not runs:
                lines.append(f"| {label} | {stored} | — | not run | | | |")
                continue
            cells = [mean_ci([r[key] for r in runs]) for key in ("acc", "bwt", "forgetting")]
            wall = np.mean([r["wall_s"] for r in runs])
            lines.append(f"| {label} | {stored} | {','.join(map(str, done))} | " + " | ".join(cells) + f" | {wall:.0f} |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def load_cache(cache: Path) -> dict[tuple[str, str, int], dict[str, float]]:
    if not cache.exists():
        return {}
    rows = [json.loads(line) for line in cache.read_text().splitlines() if line.strip()]
    return {(row["key"][0], row["key"][1], row["key"][2]): row["result"] for row in rows}


def write(markdown: str, out: Path) -> None:
    """Replace the marked block of `out` (create the file with just the block if it does not exist)."""
    block = f"{MARK_START}\n{markdown}\n{MARK_END}"
    text = out.read_text() if out.exists() else f"# Sleep learner on digit streams\n\n{MARK_START}\n{MARK_END}\n"
    head, rest = text.split(MARK_START, 1)
    out.write_text(head + block + rest.split(MARK_END, 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="seed 0, class-IL split-digits only")
    parser.add_argument("--cached-only", action="store_true", help="format the cached runs; run nothing")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "sleep_vision_results.md")
    parser.add_argument("--cache", type=Path, default=Path("runs/sleep_vision_table.jsonl"), help="finished runs; delete to recompute")
    args = parser.parse_args()
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    seeds, streams = (args.seeds, STREAMS) if not args.quick else ([0], {k: v for k, v in STREAMS.items() if "split" in k})
    markdown = tables(seeds, args.workers, streams, args.cache, run_missing=not args.cached_only)
    print(markdown)
    write(markdown, args.out)


if __name__ == "__main__":
    main()
