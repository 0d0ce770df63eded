"""Optional experiment-tracker sinks fed with the loop's metrics events (TensorBoard, MLflow).

The run directory stays the source of truth; sinks only mirror its events for
people who browse runs in TensorBoard or MLflow. Both are off by default.
Tags: `<event>/<metric>` with the experience index as step; evaluation
metrics become `eval/<metric>/exp<target>` (one curve per evaluated experience).
"""

from __future__ import annotations

import importlib.util
import numbers
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

TENSORBOARD_DIR = "tensorboard"
MLFLOW_DIR = "mlruns"


class Sink(Protocol):
    def log(self, event: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def scalars(event: dict[str, Any]) -> Iterator[tuple[str, float, int]]:
    """(tag, value, step) for every numeric metric of a loop event; run_start/run_end carry none."""
    kind = event.get("event", "event")
    step = event.get("experience")
    step = step if isinstance(step, int) else 0
    for key, value in (event.get("metrics") or {}).items():
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            continue
        if kind in ("eval", "baseline_eval") and "target" in event:
            yield f"{kind}/{key}/exp{event['target']}", float(value), step
        else:
            yield f"{kind}/{key}", float(value), step


class TensorBoardSink:
    """Writes scalars to RUN_DIR/tensorboard (open with `tensorboard --logdir RUN_DIR`)."""

    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / TENSORBOARD_DIR))

    def log(self, event: dict[str, Any]) -> None:
        for tag, value, step in scalars(event):
            self.writer.add_scalar(tag, value, global_step=step)

    def close(self) -> None:
        self.writer.close()


class MLflowSink:
    """Logs to MLflow; without MLFLOW_TRACKING_URI the store is RUN_DIR/mlruns, so nothing leaves the run."""

    def __init__(self, run_dir: Path):
        import mlflow

        self.mlflow = mlflow
        if "MLFLOW_TRACKING_URI" not in os.environ:
            mlflow.set_tracking_uri((Path(run_dir).resolve() / MLFLOW_DIR).as_uri())
        self.run = mlflow.start_run(run_name=Path(run_dir).name)

    def log(self, event: dict[str, Any]) -> None:
        for tag, value, step in scalars(event):
            self.mlflow.log_metric(tag.replace("/", "."), value, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


def make_sinks(run_dir: str | Path, tensorboard: bool, mlflow: bool) -> list[Sink]:
    """The enabled sinks; MLflow when not installed is a one-line warning, not an error."""
    sinks: list[Sink] = []
    if tensorboard:
        sinks.append(TensorBoardSink(Path(run_dir)))
    if mlflow:
        if importlib.util.find_spec("mlflow") is None:
            warnings.warn("logging.mlflow=true but mlflow is not installed; skipping MLflow logging", stacklevel=2)
        else:
            sinks.append(MLflowSink(Path(run_dir)))
    return sinks
