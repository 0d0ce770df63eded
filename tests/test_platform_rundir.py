"""Run-directory storage: atomic files with the umask, checksummed checkpoints, torn event lines, no stub after a failed
start, the config digest, a full disk midway."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat

import pytest
import torch
from helpers import events_without_timing, fast_config

from somna.evals.rundir import CheckpointError
from somna.platform.cli import main
from somna.platform.config import EnvironmentProblem
from somna.platform.rundir import RunDirectory, atomic_write
from somna.platform.runner import config_digest, run

FAST = ["learner.hidden=[32]", "learner.epochs=1", "executor=inline", "logging.progress=false"]


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


def test_run_files_follow_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        atomic_write(tmp_path / "f.txt", b"x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o640


def test_a_run_that_fails_before_its_first_commit_leaves_no_stub(tmp_path, monkeypatch):
    def no_cluster(cfg, curriculum):
        raise EnvironmentProblem("cannot reach Ray")

    monkeypatch.setattr("somna.platform.runner.make_executor", no_cluster)
    for out in (tmp_path / "absent", tmp_path / "empty"):
        (tmp_path / "empty").mkdir(exist_ok=True)
        with pytest.raises(EnvironmentProblem):
            run(fast_config("executor=inline"), out)
    assert not (tmp_path / "absent").exists() and list((tmp_path / "empty").iterdir()) == []


def test_run_start_records_the_config_digest(tmp_path):
    cfg = fast_config("executor=inline", "learner.epochs=1")
    run(cfg, tmp_path / "run")
    start = RunDirectory(tmp_path / "run").read_events()[0]
    assert start["event"] == "run_start" and start["config_sha256"] == config_digest(cfg)
    assert config_digest(fast_config("executor=ray")) == config_digest(fast_config("executor=inline"))  # how, not what


def test_a_full_disk_midway_keeps_what_was_committed_and_resume_finishes_it(tmp_path, monkeypatch, capsys):
    straight = run(fast_config("executor=inline"), tmp_path / "straight")
    save = RunDirectory.save_checkpoint

    def full_at_experience_2(self, experience, state, metadata):
        if experience == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.checkpoint_path(experience)))
        save(self, experience, state, metadata)

    monkeypatch.setattr(RunDirectory, "save_checkpoint", full_at_experience_2)
    out = str(tmp_path / "run")
    assert main(["run", "split-digits", *FAST, "--out", out]) == 1
    (line,) = [l for l in capsys.readouterr().err.splitlines() if l.startswith("somna: error")]
    assert "no space left on device; free some space, then continue with `somna resume" in line
    assert RunDirectory(tmp_path / "run").completed_experiences() == 2
    monkeypatch.undo()
    assert main(["resume", out]) == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == straight
    assert events_without_timing(tmp_path / "run") == events_without_timing(tmp_path / "straight")


def test_a_damaged_event_line_is_reported_once_and_resume_redoes_from_there(tmp_path, caplog):
    cfg = fast_config("executor=inline")
    straight = run(cfg, tmp_path / "straight")
    shutil.copytree(tmp_path / "straight", tmp_path / "damaged")
    metrics = tmp_path / "damaged" / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    cut = next(n for n, line in enumerate(lines) if '"experience": 3' in line)
    lines[cut] = lines[cut].replace('"experience": 3', '"experience": "three"')
    metrics.write_text("\n".join(lines) + "\n")
    resumed = run(cfg, tmp_path / "damaged", resume=True)
    assert resumed == straight
    assert [r.message for r in caplog.records].count(f"{metrics}:{cut + 1}: unreadable line (torn write?); "
                                                    f"it and the {len(lines) - cut - 1} line(s) after it are ignored") == 1
    assert events_without_timing(tmp_path / "damaged") == events_without_timing(tmp_path / "straight")
