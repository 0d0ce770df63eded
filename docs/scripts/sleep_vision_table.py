"""The vision sleep learner with and without each stage, next to the digit baselines, over seeds.

Runs go through docs/scripts/table_runs.py (the platform's loop order in
process, one torch thread per run, spread over `--workers` processes and
cached in a JSON-lines file, so an interrupted table resumes); cells are mean ±
95% t-CI over seeds. The tables and their provenance line replace the block
between the markers in docs/sleep_vision_results.md, leaving the hand-written
analysis around it.

    .venv/bin/python docs/scripts/sleep_vision_table.py [--seeds 0 1 2] [--workers 2] [--quick] [--cached-only]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reproduce import Row
from somna.platform.provenance import provenance_line
from table_runs import RunSpec, cell, load_cache, run_all

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
DOC = Path(__file__).resolve().parents[1] / "sleep_vision_results.md"
TOLERANCE = 0.01  # `sleep − dreaming` was identical under every kernel set here and on an AMD EPYC


def methods(variants: list[str]) -> dict[str, tuple[str, dict[str, Any], str]]:
    return {label: SLEEP_VARIANTS[label] for label in variants} | BASELINES


def spec(stream: str, label: str, seed: int) -> RunSpec:
    curriculum_name, scenario, variants = STREAMS[stream]
    learner_name, overrides, _ = methods(variants)[label]
    return learner_name, overrides, curriculum_name, {}, scenario, seed


def row(stream: str, label: str, runs: dict[int, dict[str, float]]) -> str:
    """One method's markdown line from its runs by seed."""
    stored = methods(STREAMS[stream][2])[label][2]
    if not runs:
        return f"| {label} | {stored} | — | not run | | | |"
    metrics = " | ".join(cell(list(runs.values()), key) for key in ("acc", "bwt", "forgetting"))
    wall = np.mean([run["wall_s"] for run in runs.values()])
    return f"| {label} | {stored} | {','.join(map(str, runs))} | {metrics} | {wall:.0f} |"


def heading(stream: str) -> str:
    return f"### {stream} (mean ± 95% t-CI over the seeds listed)"


def tables(seeds: list[int], workers: int, streams: list[str], cache: Path, run_missing: bool = True) -> str:
    """Run what `cache` lacks (seed-major, so a partial run still gives whole tables), then format every stream's table."""
    keys = {f"{stream}|{label}|{seed}": (stream, label, seed) for seed in seeds for stream in streams for label in methods(STREAMS[stream][2])}
    results = run_all({key: spec(*parts) for key, parts in keys.items()}, workers, cache) if run_missing else load_cache(cache)
    blocks = []
    for stream in streams:
        lines = [heading(stream), "", "| method | stored past data | seeds | ACC | BWT | forgetting | wall s/run |", "|---|---|---|---:|---:|---:|---:|"]
        for label in methods(STREAMS[stream][2]):
            runs = {seed: results[f"{stream}|{label}|{seed}"] for seed in seeds if f"{stream}|{label}|{seed}" in results}
            lines.append(row(stream, label, runs))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n\n" + provenance_line()


def cheap_rows() -> list[Row]:
    """`sleep − dreaming` on class-IL split-digits over the table's seeds (seconds a run): wake memory, expansion, seeding."""
    stream, label, seeds = "class-IL split-digits", "sleep − dreaming", [0, 1, 2]

    def recompute() -> str:
        runs = run_all({str(seed): spec(stream, label, seed) for seed in seeds}, workers=1)
        return row(stream, label, {seed: runs[str(seed)] for seed in seeds})

    return [Row(DOC, heading(stream), label, recompute, TOLERANCE, ignore=("wall s/run",))]


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
    parser.add_argument("--out", type=Path, default=DOC)
    parser.add_argument("--cache", type=Path, default=Path("runs/sleep_vision_table.jsonl"), help="finished runs; delete to recompute")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in every run, so that the provenance line names the runs' thread count
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    seeds, streams = (args.seeds, list(STREAMS)) if not args.quick else ([0], [stream for stream in STREAMS if "split" in stream])
    markdown = tables(seeds, args.workers, streams, args.cache, run_missing=not args.cached_only)
    print(markdown)
    write(markdown, args.out)


if __name__ == "__main__":
    main()
