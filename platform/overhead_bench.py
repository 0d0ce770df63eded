"""`somna bench overhead`: the same split-digits run with the Ray executor and inline, side by side.

Reports end-to-end wall time of each (Ray's includes starting and stopping the
embedded cluster), their ratio, and where the difference goes, phase by phase,
from the runs' own metrics.jsonl timings.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from somna.platform.config import load_config
from somna.platform import runner

PHASES = ("baseline_eval", "wake", "sleep", "eval")


def _phase_seconds(run_dir: Path) -> dict[str, float]:
    """Seconds per phase; eval events repeat their row's wall time once per target, so count rows."""
    totals: dict[str, float] = defaultdict(float)
    seen_rows: set[tuple[str, int]] = set()
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        event = json.loads(line)
        kind = event["event"]
        if kind not in PHASES:
            continue
        if kind in ("eval", "baseline_eval"):
            if (kind, event["experience"]) in seen_rows:
                continue
            seen_rows.add((kind, event["experience"]))
        totals[kind] += event.get("wall_s", 0.0)
    return totals


def _timed_run(overrides: list[str], run_dir: Path) -> tuple[float, dict[str, float], dict]:
    cfg = load_config("split-digits", [*overrides, "logging.progress=false"])
    started = time.perf_counter()
    summary = runner.run(cfg, run_dir)
    return time.perf_counter() - started, _phase_seconds(run_dir), summary


def run(quick: bool = False) -> str:
    overrides = ["learner.epochs=2"] if quick else []
    with tempfile.TemporaryDirectory() as folder:
        inline_s, inline_phases, inline_summary = _timed_run(["executor=inline", *overrides], Path(folder) / "inline")
        ray_s, ray_phases, ray_summary = _timed_run(["executor=ray", *overrides], Path(folder) / "ray")
    rows = [
        "| | inline | ray | ray − inline |",
        "|---|---:|---:|---:|",
        f"| end to end (s) | {inline_s:.2f} | {ray_s:.2f} | {ray_s - inline_s:+.2f} |",
    ]
    for phase in PHASES:
        a, b = inline_phases.get(phase, 0.0), ray_phases.get(phase, 0.0)
        rows.append(f"| {phase} (s) | {a:.2f} | {b:.2f} | {b - a:+.2f} |")
    setup_inline = inline_s - sum(inline_phases.values())
    setup_ray = ray_s - sum(ray_phases.values())
    rows.append(f"| setup, checkpoints, teardown (s) | {setup_inline:.2f} | {setup_ray:.2f} | {setup_ray - setup_inline:+.2f} |")
    same = "identical" if inline_summary == ray_summary else "DIFFERENT"
    return (
        "### Ray executor overhead on split-digits (finetune"
        + (", 2 epochs" if quick else ", 5 epochs")
        + ")\n\n"
        + "\n".join(rows)
        + f"\n\nratio ray / inline: **{ray_s / inline_s:.2f}×** · metrics of the two runs: {same}"
    )

