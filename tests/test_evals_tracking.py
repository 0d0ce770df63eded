"""Tracker sinks: TensorBoard scalars read back from the event file; MLflow missing is a warning."""

from __future__ import annotations

import importlib.util

import pytest

from somna.evals.tracking import TENSORBOARD_DIR, make_sinks, scalars

EVENTS = [
    {"event": "run_start", "experience": -1, "num_experiences": 2},
    {"event": "wake", "experience": 0, "metrics": {"loss": 0.5, "note": "text is skipped"}},
    {"event": "eval", "experience": 0, "target": 1, "metrics": {"accuracy": 0.25}},
    {"event": "eval", "experience": 1, "target": 1, "metrics": {"accuracy": 0.75}},
]


def test_scalar_tags():
    assert list(scalars(EVENTS[1])) == [("wake/loss", 0.5, 0)]
    assert list(scalars(EVENTS[3])) == [("eval/accuracy/exp1", 0.75, 1)]
    assert list(scalars(EVENTS[0])) == []


def test_tensorboard_sink_writes_readable_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (sink,) = make_sinks(tmp_path, tensorboard=True, mlflow=False)
    for event in EVENTS:
        sink.log(event)
    sink.close()
    accumulator = EventAccumulator(str(tmp_path / TENSORBOARD_DIR))
    accumulator.Reload()
    curve = [(s.step, s.value) for s in accumulator.Scalars("eval/accuracy/exp1")]
    assert curve == [(0, 0.25), (1, 0.75)]
    assert [s.value for s in accumulator.Scalars("wake/loss")] == [0.5]


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is not None, reason="mlflow is installed here")
def test_missing_mlflow_is_one_warning(tmp_path):
    with pytest.warns(UserWarning, match="mlflow is not installed"):
        assert make_sinks(tmp_path, tensorboard=False, mlflow=True) == []
    assert make_sinks(tmp_path, tensorboard=False, mlflow=False) == []
