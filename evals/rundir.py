"""Read-only view of a run directory, tolerant of runs that stopped halfway.

Layout (written by the platform's loop): config.yaml, metrics.jsonl (one event
per line), accuracy_matrix.csv (header `row,0,...,T-1`; an `init` row with the
accuracies before training, then one row per finished experience),
summary.json, checkpoints/exp-NNNN.safetensors + exp-NNNN.json (with the
sha256 of the tensor file). Everything here only reads; a torn last line or a
missing file becomes a warning on the `Run`, never an exception, so a crashed
run can still be reported.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

CONFIG_FILE = "config.yaml"
EVENTS_FILE = "metrics.jsonl"
MATRIX_FILE = "accuracy_matrix.csv"
SUMMARY_FILE = "summary.json"
CHECKPOINT_DIR = "checkpoints"
_CHECKPOINT_FILE = re.compile(r"exp-(\d+)\.(safetensors|json)$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class Checkpoint:
    """The saved learner state after experience `index`."""

    index: int
    tensors: Path
    meta: Path

    def problem(self) -> str | None:
        """Why this checkpoint cannot be trusted (missing, unreadable metadata, no or a wrong sha256), else None.

        The loop's resume (platform/rundir.py) and `somna eval --reevaluate` both load through this."""
        if not self.tensors.is_file():
            return f"{self.tensors}: missing"
        if not self.meta.is_file():
            return f"{self.meta}: missing metadata"
        try:
            expected = json.loads(self.meta.read_text()).get("sha256")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
            return f"{self.meta}: unreadable metadata ({error})"
        if not expected:
            return f"{self.meta}: no sha256 recorded"
        if hashlib.sha256(self.tensors.read_bytes()).hexdigest() != expected:
            return f"{self.tensors}: sha256 mismatch (corrupt file)"
        return None

    def load(self) -> dict[str, Any]:
        """The tensors, after checking integrity; raises CheckpointError naming the file."""
        problem = self.problem()
        if problem:
            raise CheckpointError(problem)
        from safetensors.torch import load_file  # torch only when a checkpoint is really read

        try:
            return load_file(str(self.tensors))
        except Exception as error:  # safetensors raises its own error types for a bad header
            raise CheckpointError(f"{self.tensors}: unreadable ({error})") from error


@dataclass
class Run:
    """Everything a report needs from one run directory.

    `matrix` has one row per finished experience (fewer than T for a partial
    run) and T columns; `baseline` is the `init` row (None if absent).
    """

    path: Path
    config: dict[str, Any]
    events: list[dict[str, Any]]
    baseline: np.ndarray | None
    matrix: np.ndarray
    summary: dict[str, Any] | None
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def num_experiences(self) -> int:
        return int(self.matrix.shape[1])

    @property
    def rows_done(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def complete(self) -> bool:
        return self.summary is not None and self.rows_done == self.num_experiences > 0

    def square(self) -> np.ndarray:
        """The leading k x k block for k finished experiences: the run so far as a k-experience stream."""
        k = self.rows_done
        return self.matrix[:k, :k]

    def get(self, dotted_key: str, default: Any = None) -> Any:
        """Config value at a dotted key ("learner.buffer"), or `default`."""
        node: Any = self.config
        for part in dotted_key.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def eval_metric(self, key: str) -> np.ndarray | None:
        """rows_done x T matrix of an eval-event metric (e.g. "perplexity"), nan where absent; None if never logged."""
        values = np.full((self.rows_done, self.num_experiences), np.nan)
        found = False
        for event in self.events:
            if event.get("event") != "eval" or key not in (event.get("metrics") or {}):
                continue
            i, j = event.get("experience"), event.get("target")
            if isinstance(i, int) and isinstance(j, int) and 0 <= i < self.rows_done and 0 <= j < self.num_experiences:
                values[i, j] = float(event["metrics"][key])
                found = True
        return values if found else None

    def checkpoints(self) -> list[Checkpoint]:
        """Checkpoints found on disk (by tensor or metadata file), sorted by experience."""
        directory = self.path / CHECKPOINT_DIR
        indices = set()
        for file in directory.glob("exp-*") if directory.is_dir() else []:
            match = _CHECKPOINT_FILE.match(file.name)
            if match:
                indices.add(int(match.group(1)))
        return [
            Checkpoint(i, directory / f"exp-{i:04d}.safetensors", directory / f"exp-{i:04d}.json")
            for i in sorted(indices)
        ]


def is_run_dir(path: Path) -> bool:
    """A directory the loop has started writing into (it writes config.yaml first)."""
    return (path / CONFIG_FILE).is_file()


def load_run(path: str | Path) -> Run:
    """Read a run directory; raises ValueError only when it is not a run directory at all."""
    path = Path(path)
    if not is_run_dir(path):
        raise ValueError(f"run directory {str(path)!r} has no {CONFIG_FILE}; not a somna run")
    warnings: list[str] = []
    config = yaml.safe_load((path / CONFIG_FILE).read_text()) or {}
    events = _read_events(path / EVENTS_FILE, warnings)
    baseline, matrix = _read_matrix(path / MATRIX_FILE, events, warnings)
    summary = _read_summary(path / SUMMARY_FILE, warnings)
    return Run(path, config, events, baseline, matrix, summary, warnings)


def _read_events(file: Path, warnings: list[str]) -> list[dict[str, Any]]:
    if not file.is_file():
        warnings.append(f"{file}: missing")
        return []
    events = []
    for number, line in enumerate(file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            warnings.append(f"{file}:{number}: unreadable line skipped (torn write?)")
    return events


def _read_matrix(file: Path, events: list[dict[str, Any]], warnings: list[str]) -> tuple[np.ndarray | None, np.ndarray]:
    """(init row, finished rows) from the CSV, or rebuilt from eval events when the CSV is missing."""
    if not file.is_file():
        warnings.append(f"{file}: missing; accuracy matrix rebuilt from {EVENTS_FILE}")
        return _matrix_from_events(events)
    with file.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        warnings.append(f"{file}: empty")
        return None, np.zeros((0, 0))
    width = len(rows[0]) - 1
    baseline, finished = None, []
    for number, row in enumerate(rows[1:], start=2):
        values = _floats(row[1:], width)
        if not row or values is None:
            warnings.append(f"{file}:{number}: incomplete row skipped")
        elif row[0] == "init":
            baseline = values
        elif row[0] == str(len(finished)):
            finished.append(values)
        else:
            warnings.append(f"{file}:{number}: row {row[0]!r} out of order, skipped")
    return baseline, np.array(finished, dtype=float).reshape(len(finished), width)


def _floats(cells: list[str], width: int) -> np.ndarray | None:
    try:
        values = [float(cell) for cell in cells]
    except ValueError:
        return None
    return np.array(values) if len(values) == width and all(math.isfinite(v) for v in values) else None


def _matrix_from_events(events: list[dict[str, Any]]) -> tuple[np.ndarray | None, np.ndarray]:
    """Accuracy matrix from `baseline_eval`/`eval` events, keeping only rows with every target scored."""
    scores: dict[int, dict[int, float]] = {}
    baseline: dict[int, float] = {}
    for event in events:
        accuracy = (event.get("metrics") or {}).get("accuracy")
        target = event.get("target")
        if accuracy is None or not isinstance(target, int):
            continue
        if event.get("event") == "baseline_eval":
            baseline[target] = float(accuracy)
        elif event.get("event") == "eval" and isinstance(event.get("experience"), int):
            scores.setdefault(event["experience"], {})[target] = float(accuracy)
    width = max([len(baseline)] + [max(row) + 1 for row in scores.values()], default=0)
    finished = []
    while len(finished) in scores and len(scores[len(finished)]) == width:
        row = scores[len(finished)]
        finished.append([row[j] for j in range(width)])
    init = np.array([baseline[j] for j in range(width)]) if len(baseline) == width and width else None
    return init, np.array(finished, dtype=float).reshape(len(finished), width)


def _read_summary(file: Path, warnings: list[str]) -> dict[str, Any] | None:
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError:
        warnings.append(f"{file}: unreadable, ignored")
        return None
