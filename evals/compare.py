"""Compare runs across seeds: group by a config key, mean ± 95% CI per metric, best marked.

`somna compare` and `somna sweep` end here. Metrics are recomputed from each
run's accuracy matrix (see report.run_metrics). When the runs include the
`joint` learner, every run also gets intransigence against the joint run of
the same curriculum, scenario and seed.

Runs of different streams (curriculum, scenario, number of experiences) never
share a row: when the runs differ in one of those, it becomes a grouping key.
A run that cannot be compared (unreadable config.yaml, no accuracy matrix,
unfinished, damaged summary.json) is skipped and named in `skipped`. A glob
skips the files it matches, so `somna compare 'runs/*'` reads its own
compare.md/.csv/.png back without tripping over them.
"""

from __future__ import annotations

import csv
import glob
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from somna.evals import plots
from somna.evals.document import Document, Table
from somna.evals.metrics import LOWER_IS_BETTER
from somna.evals.report import run_metrics
from somna.evals.rundir import SUMMARY_FILE, Run, RunDirectoryError, is_run_dir, load_run
from somna.evals.stats import MeanCI, mean_ci

JOINT_LEARNER = "joint"
COMPARE_MD = "compare.md"
COMPARE_CSV = "compare.csv"
COMPARE_PNG = "compare.png"
BAR_METRICS = ("acc", "forgetting", "bwt", "plasticity")
METRIC_RANGES = {"acc": (0.0, 1.0), "plasticity": (0.0, 1.0), "forgetting": (-1.0, 1.0), "bwt": (-1.0, 1.0)}  # CI bars stop there
STREAM_KEYS = ("curriculum.name", "scenario", "curriculum.num_experiences")  # what makes two runs comparable


@dataclass
class Comparison:
    """cells[group][metric] is the mean ± CI over that group's runs (None when no run has the metric)."""

    by: list[str]
    groups: list[str]
    metrics: list[str]
    cells: dict[str, dict[str, MeanCI | None]]
    seeds: dict[str, list]
    skipped: list[str]

    def best(self, metric: str) -> set[str]:
        """Groups whose mean is best for `metric` (ties included); lower is better for forgetting-like metrics."""
        means = {g: c.mean for g in self.groups if (c := self.cells[g][metric]) is not None}
        if not means:
            return set()
        target = min(means.values()) if metric in LOWER_IS_BETTER else max(means.values())
        return {g for g, m in means.items() if math.isclose(m, target, rel_tol=1e-12, abs_tol=1e-12)}


def find_runs(sources: Iterable[str | Path]) -> list[Path]:
    """Run directories from paths, glob patterns (the files they match are skipped), or folders holding run
    directories (a sweep's --out)."""
    found: list[Path] = []
    for source in sources:
        is_pattern = glob.has_magic(str(source))
        matches = sorted(glob.glob(str(source))) if is_pattern else [str(source)]
        if not matches:
            raise ValueError(f"pattern {str(source)!r} matches nothing")
        for match in map(Path, matches):
            if is_pattern and not match.is_dir():
                continue
            if is_run_dir(match):
                found.append(match)
            elif match.is_dir():
                found.extend(child for child in sorted(match.iterdir()) if is_run_dir(child))
            else:
                raise ValueError(f"{str(match)!r} is not a run directory, a folder of runs or a glob matching them")
    if not found:
        raise ValueError(f"no run directories found in: {', '.join(map(str, sources))}")
    return list(dict.fromkeys(found))


def group_label(run: Run, keys: Sequence[str]) -> str:
    """Values of the grouping keys; a config node with a `name` (e.g. `learner`) stands for its name; n/a if absent."""
    parts = []
    for key in keys:
        value = run.get(key, "n/a")
        if isinstance(value, dict):
            value = value.get("name", "n/a")
        parts.append(str(value) if len(keys) == 1 else f"{key.split('.')[-1]}={value}")
    return ",".join(parts)


def load_runs(paths: Iterable[Path]) -> tuple[list[Run], list[str]]:
    """(the runs read, "<path>: <why>" for each folder whose config.yaml cannot be read)."""
    runs, skipped = [], []
    for path in paths:
        try:
            runs.append(load_run(path))
        except RunDirectoryError as error:
            skipped.append(str(error))
    return runs, skipped


def incomplete(run: Run) -> str | None:
    """Why a run cannot be compared (no matrix, unfinished, no readable summary.json), or None."""
    if run.num_experiences == 0:
        return f"{run.path}: no accuracy matrix"
    if run.rows_done < run.num_experiences:
        return f"{run.path}: partial ({run.rows_done} of {run.num_experiences} experiences)"
    return None if run.summary is not None else f"{run.path}: no readable {SUMMARY_FILE} (unfinished or damaged)"


def compare_runs(runs: Sequence[Run], by: Sequence[str] = ("learner",), skipped: Sequence[str] = ()) -> Comparison:
    """Aggregate complete runs per group over seeds; the others are skipped and listed (after `skipped`)."""
    complete = [run for run in runs if incomplete(run) is None]
    skipped = [*skipped, *(reason for run in runs if (reason := incomplete(run)))]
    if not complete:
        raise ValueError(f"no complete run to compare ({'; '.join(skipped) or 'none found'})")
    by = stream_keys(complete, by) + list(by)
    joints = {_stream_key(run): run for run in complete if run.get("learner.name") == JOINT_LEARNER}
    per_group: dict[str, list[dict[str, float]]] = {}
    seeds: dict[str, list] = {}
    for run in complete:
        label = group_label(run, by)
        per_group.setdefault(label, []).append(run_metrics(run, joints.get(_stream_key(run))))
        seeds.setdefault(label, []).append(run.get("seed"))
    metric_names = list(dict.fromkeys(name for rows in per_group.values() for row in rows for name in row))
    cells = {
        group: {name: _aggregate([row.get(name, math.nan) for row in rows]) for name in metric_names}
        for group, rows in per_group.items()
    }
    return Comparison(list(by), sorted(per_group), metric_names, cells, seeds, skipped)


def stream_keys(runs: Sequence[Run], by: Sequence[str]) -> list[str]:
    """The stream keys (curriculum, scenario, number of experiences) on which the runs differ and `by` does not group."""
    return [key for key in STREAM_KEYS if key not in by and len({repr(run.get(key)) for run in runs}) > 1]


def _stream_key(run: Run) -> tuple:
    return (repr(run.get("curriculum")), run.get("scenario"), run.get("seed"))


def _aggregate(values: list[float]) -> MeanCI | None:
    return mean_ci(values) if any(not math.isnan(v) for v in values) else None


def comparison_table(comparison: Comparison) -> Table:
    headers = [",".join(comparison.by), "runs", "seeds"] + comparison.metrics
    rows, bold = [], set()
    for r, group in enumerate(comparison.groups):
        cells = [comparison.cells[group][m] for m in comparison.metrics]
        seeds = ",".join(str(s) for s in sorted(comparison.seeds[group], key=str))
        rows.append([group, str(len(comparison.seeds[group])), seeds] + [c.format() if c else "n/a" for c in cells])
    for c, metric in enumerate(comparison.metrics, start=3):
        bold |= {(comparison.groups.index(g), c) for g in comparison.best(metric)}
    return Table(headers, rows, bold)


def write_comparison(comparison: Comparison, out_dir: str | Path) -> dict[str, Path]:
    """compare.md (best bold), compare.csv (mean and CI half-width per metric) and compare.png (bars ± CI)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / COMPARE_MD, "csv": out_dir / COMPARE_CSV, "png": out_dir / COMPARE_PNG}
    bar_metrics = [m for m in BAR_METRICS if m in comparison.metrics]
    plots.metric_bars(
        comparison.groups,
        {m: [comparison.cells[g][m] for g in comparison.groups] for m in bar_metrics},
        paths["png"],
        "mean ± 95% CI over seeds",
        METRIC_RANGES,
    )
    document = Document(f"somna compare (by {', '.join(comparison.by)})")
    document.text(
        "Mean ± 95% confidence half-width over seeds (Student t, n-1 degrees of freedom; no interval when n = 1). "
        f"Best per column in bold; lower is better for {', '.join(sorted(LOWER_IS_BETTER))}, higher for the rest."
    )
    document.table(comparison_table(comparison))
    document.image(paths["png"], "metrics per group, mean ± 95% CI")
    if comparison.skipped:
        document.heading("Skipped")
        document.bullets(comparison.skipped)
    paths["md"].write_text(document.to_markdown(out_dir))
    _write_csv(comparison, paths["csv"])
    return paths


def _write_csv(comparison: Comparison, path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([",".join(comparison.by), "runs"] + [f"{m}_{s}" for m in comparison.metrics for s in ("mean", "ci95")])
        for group in comparison.groups:
            row: list[str] = [group, str(len(comparison.seeds[group]))]
            for metric in comparison.metrics:
                cell = comparison.cells[group][metric]
                row += [repr(cell.mean), repr(cell.half_width)] if cell else ["", ""]
            writer.writerow(row)


def compare(sources: Iterable[str | Path], by: Sequence[str] = ("learner",), out_dir: str | Path | None = None) -> tuple[Comparison, dict[str, Path]]:
    """Find, load, aggregate and write; `out_dir` defaults to the runs' common parent folder."""
    paths = find_runs(sources)
    runs, unreadable = load_runs(paths)
    comparison = compare_runs(runs, by, unreadable)
    if out_dir is None:
        out_dir = Path(os.path.commonpath([p.resolve().parent for p in paths]))
    return comparison, write_comparison(comparison, out_dir)
