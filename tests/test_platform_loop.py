"""The driver loop: files written, determinism, inline == Ray, resume and recovery give identical metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import events_without_timing, fast_config

from somna.evals import metrics
from somna.platform.rundir import RunDirectory
from somna.platform.runner import run


def _summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


def _matrix(run_dir):
    lines = (run_dir / "accuracy_matrix.csv").read_text().splitlines()
    rows = [line.split(",") for line in lines[1:]]
    return np.array([[float(x) for x in row[1:]] for row in rows])


def test_run_writes_the_run_directory(tmp_path):
    cfg = fast_config("executor=inline")
    summary = run(cfg, tmp_path / "run")
    run_dir = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "accuracy_matrix.csv", "summary.json"):
        assert (run_dir / name).is_file(), name
    assert {"acc", "bwt", "fwt", "forgetting"} <= set(summary)
    assert all(isinstance(summary[k], float) for k in ("acc", "bwt", "fwt", "forgetting"))
    table = _matrix(run_dir)
    assert table.shape == (6, 5)  # init row + one row per experience
    assert summary["acc"] == pytest.approx(metrics.acc(table[1:]))
    assert summary["fwt"] == pytest.approx(metrics.fwt(table[1:], table[0]))
    directory = RunDirectory(run_dir)
    for experience in range(5):
        state = directory.load_checkpoint(experience)
        assert state and all(hasattr(v, "dtype") for v in state.values())
    kinds = [e["event"] for e in events_without_timing(run_dir)]
    assert kinds.count("experience_end") == 6 and kinds.count("wake") == 5 and kinds.count("eval") == 25


def test_same_seed_gives_identical_summary_and_another_seed_does_not(tmp_path):
    first = run(fast_config("executor=inline"), tmp_path / "a")
    second = run(fast_config("executor=inline"), tmp_path / "b")
    other = run(fast_config("executor=inline", "seed=1"), tmp_path / "c")
    assert (tmp_path / "a" / "summary.json").read_bytes() == (tmp_path / "b" / "summary.json").read_bytes()
    assert first == second
    assert other["acc"] != first["acc"]


def test_ray_executor_matches_inline(tmp_path, ray_session):
    inline = run(fast_config("executor=inline", "learner=replay", "learner.buffer=50"), tmp_path / "inline")
    on_ray = run(fast_config("executor=ray", "learner=replay", "learner.buffer=50"), tmp_path / "ray")
    assert inline == on_ray
    assert events_without_timing(tmp_path / "inline") == events_without_timing(tmp_path / "ray")
    nodes = {json.loads(l).get("node_id") for l in (tmp_path / "ray" / "metrics.jsonl").read_text().splitlines()}
    assert ray_session.get_runtime_context().get_node_id() in nodes


def _interrupt_after(experience):
    def hook(done):
        if done == experience:
            raise KeyboardInterrupt

    return hook


@pytest.mark.parametrize("learner", ["finetune", "replay"])
def test_resume_after_interruption_matches_uninterrupted_run(tmp_path, learner):
    cfg = fast_config("executor=inline", f"learner={learner}")
    straight = run(cfg, tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        run(cfg, tmp_path / "resumed", on_experience_end=_interrupt_after(2))
    assert RunDirectory(tmp_path / "resumed").completed_experiences() == 3
    resumed = run(cfg, tmp_path / "resumed", resume=True)
    assert resumed == straight
    assert events_without_timing(tmp_path / "resumed") == events_without_timing(tmp_path / "straight")


def test_resume_drops_a_half_written_experience_and_a_corrupt_checkpoint(tmp_path):
    cfg = fast_config("executor=inline")
    straight = run(cfg, tmp_path / "straight")
    run_dir = tmp_path / "broken"
    with pytest.raises(KeyboardInterrupt):
        run(cfg, run_dir, on_experience_end=_interrupt_after(3))
    # a crash while experience 4 was being logged: a torn line after the committed events
    with open(run_dir / "metrics.jsonl", "a") as file:
        file.write('{"event": "wake", "experience": 4, "metr')
    # and the newest checkpoint is truncated on disk
    newest = RunDirectory(run_dir).checkpoint_path(3)
    newest.write_bytes(newest.read_bytes()[:100])
    resumed = run(cfg, run_dir, resume=True)
    assert resumed == straight
    assert events_without_timing(run_dir) == events_without_timing(tmp_path / "straight")


def test_tensorboard_mirror_when_enabled(tmp_path):
    run(fast_config("executor=inline", "logging.tensorboard=true"), tmp_path / "tb")
    event_files = list((tmp_path / "tb" / "tensorboard").glob("events.out.tfevents.*"))
    assert event_files and event_files[0].stat().st_size > 0
