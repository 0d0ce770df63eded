"""PNG figures for reports and comparisons (matplotlib, no display needed).

Figures are built with `matplotlib.figure.Figure` directly, which renders
through Agg without touching pyplot's global state or the process backend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from somna.evals.stats import MeanCI

DPI = 110


def accuracy_heatmap(matrix: np.ndarray, baseline: np.ndarray | None, path: Path, title: str) -> Path:
    """R as a heatmap with values written in the cells; the `init` row (b) on top when present."""
    rows = matrix if baseline is None else np.vstack([baseline, matrix])
    labels = ([] if baseline is None else ["init"]) + [f"after {i}" for i in range(matrix.shape[0])]
    T = matrix.shape[1]
    figure = Figure(figsize=(1.2 + 0.75 * T, 1.0 + 0.5 * len(labels)), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(rows, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    for r in range(rows.shape[0]):
        for c in range(T):
            value = rows[r, c]
            axes.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=8, color="white" if value < 0.6 else "black")
    axes.set_xticks(range(T), [str(j) for j in range(T)])
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("evaluated on experience")
    axes.set_title(title, fontsize=10)
    figure.colorbar(image, ax=axes, fraction=0.05, label="accuracy")
    return _save(figure, path)


def experience_curves(
    matrix: np.ndarray, baseline: np.ndarray | None, path: Path, title: str, ylabel: str = "accuracy"
) -> Path:
    """One line per experience j: its score after each training step (x = -1 is before training)."""
    steps = np.arange(matrix.shape[0])
    figure = Figure(figsize=(6.4, 3.8), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    for j in range(matrix.shape[1]):
        xs, ys = steps, matrix[:, j]
        if baseline is not None:
            xs, ys = np.concatenate([[-1], steps]), np.concatenate([[baseline[j]], ys])
        (line,) = axes.plot(xs, ys, marker="o", markersize=3, label=f"exp {j}")
        if j < matrix.shape[0]:  # mark the step where j was learned
            axes.plot([j], [matrix[j, j]], marker="*", markersize=10, color=line.get_color())
    axes.set_xlabel("after training on experience (-1 = before training; * = just learned)")
    axes.set_ylabel(ylabel)
    axes.set_xticks(np.arange(-1 if baseline is not None else 0, matrix.shape[0]))
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, ncols=2 if matrix.shape[1] > 6 else 1, loc="best")
    return _save(figure, path)


def metric_bars(
    groups: Sequence[str],
    cells: dict[str, list[MeanCI | None]],
    path: Path,
    title: str,
    ranges: dict[str, tuple[float, float]] | None = None,
) -> Path:
    """One panel per metric, one bar per group, error bars = 95% CI (none for n = 1), cut at the metric's range
    (e.g. accuracy never goes past [0, 1], whatever a t-interval over few seeds says)."""
    metrics = list(cells)
    columns = min(4, len(metrics))
    grid_rows = math.ceil(len(metrics) / columns)
    figure = Figure(figsize=(3.2 * columns, 0.6 + 2.9 * grid_rows), dpi=DPI, layout="constrained")
    figure.suptitle(title, fontsize=10)
    positions = np.arange(len(groups))
    colors = [f"C{k % 10}" for k in range(len(groups))]
    for index, metric in enumerate(metrics):
        axes = figure.add_subplot(grid_rows, columns, index + 1)
        values = cells[metric]
        means = [v.mean if v else np.nan for v in values]
        errors = _clipped_errors(values, (ranges or {}).get(metric, (-math.inf, math.inf)))
        axes.bar(positions, means, yerr=errors, capsize=3, color=colors)
        axes.axhline(0.0, color="black", linewidth=0.6)
        axes.set_xticks(positions, groups, rotation=45, ha="right", fontsize=8)
        axes.set_title(metric, fontsize=9)
        axes.grid(axis="y", alpha=0.3)
    return _save(figure, path)


def loss_curve(losses: Sequence[float], path: Path, title: str, smooth: int = 25) -> Path:
    """Training loss per step (thin) and its running mean over `smooth` steps (bold), log scale."""
    steps = np.arange(1, len(losses) + 1)
    figure = Figure(figsize=(6.4, 3.6), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    axes.plot(steps, losses, linewidth=0.5, alpha=0.4, color="C0")
    if len(losses) >= smooth:
        running = np.convolve(losses, np.ones(smooth) / smooth, mode="valid")
        axes.plot(steps[smooth - 1 :], running, linewidth=1.8, color="C0", label=f"mean of {smooth} steps")
        axes.legend(fontsize=8)
    axes.set_yscale("log")
    axes.set_xlabel("step")
    axes.set_ylabel("loss (nats per token)")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3, which="both")
    return _save(figure, path)


def _clipped_errors(values: Sequence[MeanCI | None], bounds: tuple[float, float]) -> np.ndarray:
    """(2, n) distances from each mean down and up to its interval's ends, the ends cut at `bounds`."""
    low, high = bounds
    errors = np.zeros((2, len(values)))
    for index, value in enumerate(values):
        if value is not None and not math.isnan(value.half_width):
            errors[:, index] = value.mean - max(value.low, low), min(value.high, high) - value.mean
    return errors


def _save(figure: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
