"""Run-directory storage: atomic files, checksummed checkpoints, torn event lines."""

from __future__ import annotations

import json

import pytest
import torch

from somna.evals.rundir import CheckpointError
from somna.platform.rundir import RunDirectory, atomic_write


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_checkpoint_round_trip_and_corruption_is_detected(tmp_path):
    directory = RunDirectory(tmp_path)
    state = {"w": torch.arange(6.0).reshape(2, 3), "n": torch.tensor([3])}
    directory.save_checkpoint(0, state, {"learner": "x"})
    loaded = directory.load_checkpoint(0)
    assert torch.equal(loaded["w"], state["w"]) and torch.equal(loaded["n"], state["n"])
    path = directory.checkpoint_path(0)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="exp-0000.safetensors: sha256 mismatch"):
        directory.load_checkpoint(0)
    with pytest.raises(CheckpointError, match="exp-0001.safetensors: missing"):
        directory.load_checkpoint(1)
    meta = directory.checkpoint_path(0).with_suffix(".json")
    meta.write_text(json.dumps({k: v for k, v in json.loads(meta.read_text()).items() if k != "sha256"}))
    with pytest.raises(CheckpointError, match="no sha256 recorded"):
        directory.load_checkpoint(0)


def test_events_commit_point_and_torn_line(tmp_path):
    directory = RunDirectory(tmp_path)
    directory.append_events([{"event": "run_start", "experience": -1}])
    directory.append_events([{"event": "eval", "experience": 0}, {"event": "experience_end", "experience": 0}])
    directory.append_events([{"event": "wake", "experience": 1}])
    with open(directory.metrics_path, "a") as file:
        file.write('{"event": "ev')
    assert directory.completed_experiences() == 1
    directory.truncate_uncommitted(1)
    assert [e["event"] for e in directory.read_events()] == ["run_start", "eval", "experience_end"]
