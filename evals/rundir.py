"""The run directory: the one place that names its files and parses them.

Layout (runs/<name>/; the platform's loop writes it through these names):
  config.yaml            the resolved config
  metrics.jsonl          append-only events, one JSON object per line; an experience counts
                         as done once its `experience_end` event is on disk (the commit point);
                         experience -1 is the evaluation before training
  accuracy_matrix.csv    header `row,0..T-1`; row `init` = accuracy before training, then one row per experience
  summary.json           headline metrics (identical for identical seeds: no timings)
  checkpoints/exp-NNNN.safetensors + exp-NNNN.json (sha256 of the tensors, experience index)
  artifacts/exp-NNNN/    what sleep stages write for people to read (e.g. dreams.jsonl)
  report.md, report.html, *.png   written by `somna eval`

Reading tolerates runs that stopped halfway: a missing file or an unreadable
line becomes a warning on the `Run`, never an exception, so a crashed run can
still be reported; only a folder without a readable config.yaml is refused
(`RunDirectoryError`, naming the file). Events are trusted up to the first
unreadable line (a crash can only tear the last one; anything after a damaged
line is not trusted, which is also what makes a resume redo that experience).
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
ARTIFACTS_DIR = "artifacts"
COMMIT_EVENT = "experience_end"
BASELINE = -1  # the experience index of the evaluation before training
_CHECKPOINT_FILE = re.compile(r"exp-(\d+)\.(safetensors|json)$")


def checkpoint_files(run_path: Path, experience: int) -> tuple[Path, Path]:
    """(tensors, metadata) of the checkpoint after `experience`."""
    stem = Path(run_path) / CHECKPOINT_DIR / f"exp-{experience:04d}"
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def artifacts_dir(run_path: Path, experience: int) -> Path:
    return Path(run_path) / ARTIFACTS_DIR / f"exp-{experience:04d}"


class RunDirectoryError(ValueError):
    """A folder that is not a readable somna run directory; the message names the file and why."""


def yaml_problem(error: yaml.YAMLError, position: bool = True) -> str:
    """A YAML error on one line, with the line and column it points at (PyYAML spreads it over several)."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None) or str(error).strip().splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark and position else problem


def read_config(path: Path) -> dict[str, Any]:
    """A run directory's config.yaml as a mapping (read safely: no Python tags), or RunDirectoryError."""
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        raise RunDirectoryError(f"run directory {str(path)!r} has no {CONFIG_FILE}; not a somna run")
    try:
        config = yaml.safe_load(file.read_text())
    except yaml.YAMLError as error:
        raise RunDirectoryError(f"{file} is not valid YAML ({yaml_problem(error)})") from None
    except UnicodeDecodeError:
        raise RunDirectoryError(f"{file} is not text") from None
    if config is not None and not isinstance(config, dict):
        raise RunDirectoryError(f"{file} must be a YAML mapping of config keys, got {type(config).__name__}")
    return config or {}


def is_run_dir(path: Path) -> bool:
    """A directory the loop has started writing into (it writes config.yaml first)."""
    return (Path(path) / CONFIG_FILE).is_file()


# -- events -------------------------------------------------------------------------------------
def read_events(file: Path) -> tuple[list[dict[str, Any]], str | None]:
    """(every event up to the first unreadable line, a one-line problem or None); a missing file has no events."""
    if not Path(file).is_file():
        return [], None
    events: list[dict[str, Any]] = []
    lines = Path(file).read_text(errors="replace").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        event = _event(line)
        if event is None:
            ignored = len(lines) - number
            rest = f" and the {ignored} line(s) after it are" if ignored else " is"
            return events, f"{file}:{number}: unreadable line (torn write?); it{rest} ignored"
        events.append(event)
    return events, None


def _event(line: str) -> dict[str, Any] | None:
    """A loop event: a JSON object with a string `event` and an integer `experience`; else None."""
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        return None
    experience = event.get("experience")
    return event if isinstance(experience, int) and not isinstance(experience, bool) else None


def committed(events: list[dict[str, Any]]) -> set[int]:
    """Experiences whose `experience_end` event is on disk (BASELINE is the evaluation before training)."""
    return {e["experience"] for e in events if e["event"] == COMMIT_EVENT}


def accuracy_rows(events: list[dict[str, Any]], width: int | None = None) -> tuple[list[float] | None, list[list[float]]]:
    """(init row or None, rows 0..k-1) of the accuracy matrix from committed `baseline_eval`/`eval` events.

    `width` (T) defaults to the run_start event's `num_experiences`; rows stop at the
    first experience that is not committed or lacks a target."""
    if width is None:
        width = next((e.get("num_experiences") for e in events if e["event"] == "run_start"), None)
        width = width if isinstance(width, int) else 1 + max((e.get("target", -1) for e in events), default=-1)
    done = committed(events)
    scores: dict[int, dict[int, float]] = {}
    for event in events:
        accuracy = (event.get("metrics") or {}).get("accuracy") if isinstance(event.get("metrics"), dict) else None
        target = event.get("target")
        if event["event"] in ("eval", "baseline_eval") and event["experience"] in done and isinstance(target, int) and isinstance(accuracy, (int, float)):
            scores.setdefault(event["experience"], {})[target] = float(accuracy)

    def row(experience: int) -> list[float] | None:
        found = scores.get(experience, {})
        return [found[j] for j in range(width)] if width and all(j in found for j in range(width)) else None

    rows: list[list[float]] = []
    while (next_row := row(len(rows))) is not None:
        rows.append(next_row)
    return row(BASELINE), rows


SKILL_PREFIX = "skill/"  # eval metrics that score the base's own skills (text learners log them once per row)


def skill_rows(events: list[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """Row (BASELINE = before the stream, then each committed experience) -> the skill scores logged with its evaluation."""
    done = committed(events)
    rows: dict[int, dict[str, float]] = {}
    for event in events:
        metrics = event.get("metrics")
        if event["event"] not in ("eval", "baseline_eval") or event["experience"] not in done or not isinstance(metrics, dict):
            continue
        for key, value in metrics.items():
            if key.startswith(SKILL_PREFIX) and isinstance(value, (int, float)) and not isinstance(value, bool):
                rows.setdefault(event["experience"], {})[key.removeprefix(SKILL_PREFIX)] = float(value)
    return rows


# -- checkpoints --------------------------------------------------------------------------------
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
        return [Checkpoint(i, *checkpoint_files(self.path, i)) for i in sorted(indices)]


def load_run(path: str | Path) -> Run:
    """Read a run directory; raises RunDirectoryError only when its config.yaml is missing or unreadable."""
    path = Path(path)
    config = read_config(path)
    warnings: list[str] = []
    if not (path / EVENTS_FILE).is_file():
        warnings.append(f"{path / EVENTS_FILE}: missing")
    events, problem = read_events(path / EVENTS_FILE)
    warnings += [problem] if problem else []
    baseline, matrix = _read_matrix(path / MATRIX_FILE, events, warnings)
    summary = _read_summary(path / SUMMARY_FILE, warnings)
    return Run(path, config, events, baseline, matrix, summary, warnings)


def _read_matrix(file: Path, events: list[dict[str, Any]], warnings: list[str]) -> tuple[np.ndarray | None, np.ndarray]:
    """(init row, finished rows) from the CSV, or rebuilt from eval events when the CSV is missing."""
    if not file.is_file():
        warnings.append(f"{file}: missing; accuracy matrix rebuilt from {EVENTS_FILE}")
        baseline, rows = accuracy_rows(events)
        width = len(baseline) if baseline is not None else len(rows[0]) if rows else 0
        return (np.array(baseline) if baseline is not None else None), np.array(rows, dtype=float).reshape(len(rows), width)
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


def _read_summary(file: Path, warnings: list[str]) -> dict[str, Any] | None:
    """summary.json as a mapping; a damaged one is a warning and counts as absent (the run is then not complete)."""
    if not file.is_file():
        return None
    try:
        summary = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        summary = None
    if not isinstance(summary, dict):
        warnings.append(f"{file}: unreadable, ignored")
        return None
    return summary
