"""Writing the run directory so that a crash loses nothing finished (names and parsing: somna.evals.rundir).

Files are replaced atomically (temp file, fsync, rename); events are appended
with one write + fsync per experience. Nothing here is unpickled or executed:
tensors via safetensors, config via YAML, metadata via JSON.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as save_safetensors

from somna.evals.rundir import (
    CONFIG_FILE,
    EVENTS_FILE,
    MATRIX_FILE,
    SUMMARY_FILE,
    Checkpoint,
    artifacts_dir,
    checkpoint_files,
    committed,
    read_events,
)

log = logging.getLogger(__name__)


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old file or the whole new one.

    The file gets the mode any new file gets under the user's umask (mkstemp would make it 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    handle = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class RunDirectory:
    def __init__(self, path: Path, mirrors: list[Any] | None = None):
        self.path = Path(path)
        self.mirrors = mirrors or []  # objects with log(event), e.g. TensorBoard; fed after each append
        self._reported: set[str] = set()  # problems of metrics.jsonl already logged (each is logged once)

    # -- paths ---------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / EVENTS_FILE

    @property
    def matrix_path(self) -> Path:
        return self.path / MATRIX_FILE

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY_FILE

    def checkpoint_path(self, experience: int) -> Path:
        return checkpoint_files(self.path, experience)[0]

    def artifacts_dir(self, experience: int) -> Path:
        return artifacts_dir(self.path, experience)

    # -- config -----------------------------------------------------------------------------
    def write_config(self, config_yaml: str) -> None:
        atomic_write(self.config_path, config_yaml.encode())

    # -- events -------------------------------------------------------------------------------
    def append_events(self, events: list[dict[str, Any]]) -> None:
        """Append events in one write + fsync, so an experience's events land together."""
        lines = "".join(json.dumps(event, sort_keys=True) + "\n" for event in events)
        with open(self.metrics_path, "a") as file:
            file.write(lines)
            file.flush()
            os.fsync(file.fileno())
        for mirror in self.mirrors:
            for event in events:
                mirror.log(event)

    def read_events(self) -> list[dict[str, Any]]:
        """Every event up to the first unreadable line (a crash mid-write tears the last one); a damaged line is logged once."""
        events, problem = read_events(self.metrics_path)
        if problem and problem not in self._reported:
            self._reported.add(problem)
            log.warning("%s", problem)
        return events

    def completed_experiences(self) -> int:
        """How many experiences are committed (have their `experience_end` event)."""
        ends = committed(self.read_events())
        return max(ends) + 1 if ends else 0

    def truncate_uncommitted(self, keep: int) -> None:
        """Keep `run_start` and the events of committed experiences below `keep`; drop the rest,
        which the resumed run redoes (so no event is duplicated or missing)."""
        events = self.read_events()
        done = committed(events)
        kept = [
            e for e in events
            if e.get("event") == "run_start" or (e.get("experience") in done and e["experience"] < keep)
        ]
        atomic_write(self.metrics_path, "".join(json.dumps(e, sort_keys=True) + "\n" for e in kept).encode())

    # -- accuracy matrix ------------------------------------------------------------------------
    def write_matrix(self, baseline: list[float], rows: list[list[float]]) -> None:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["row", *range(len(baseline))])
        writer.writerow(["init", *[repr(float(x)) for x in baseline]])
        for index, row in enumerate(rows):
            writer.writerow([index, *[repr(float(x)) for x in row]])
        atomic_write(self.matrix_path, buffer.getvalue().encode())

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write(self.summary_path, (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())

    # -- checkpoints --------------------------------------------------------------------------------
    def save_checkpoint(self, experience: int, state: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        """Tensors first, then the JSON naming their checksum: a checkpoint counts only once both exist."""
        data = save_safetensors({k: v.contiguous() for k, v in state.items()})
        tensors, meta_file = checkpoint_files(self.path, experience)
        atomic_write(tensors, data)
        meta = {**metadata, "experience": experience, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        atomic_write(meta_file, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())

    def load_checkpoint(self, experience: int) -> dict[str, torch.Tensor]:
        """The verified tensors of a checkpoint, or CheckpointError naming the file and the reason.

        The verification is the one `somna eval` uses (somna.evals.rundir.Checkpoint)."""
        return Checkpoint(experience, *checkpoint_files(self.path, experience)).load()
