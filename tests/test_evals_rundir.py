"""Reading run directories, complete and partial; `write_run` writes synthetic ones for the other evals tests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save

from somna.evals.metrics import summarize
from somna.evals.rundir import CheckpointError, load_run


def write_run(
    path: Path,
    R: np.ndarray,
    b: np.ndarray,
    *,
    learner: str = "finetune",
    seed: int = 0,
    rows_done: int | None = None,
    learner_fields: dict | None = None,
    extra_eval: dict[str, np.ndarray] | None = None,
) -> Path:
    """A run directory in the loop's format: `rows_done` < T leaves a partial run (no summary.json)."""
    R, b = np.asarray(R, float), np.asarray(b, float)
    T = R.shape[1]
    rows_done = T if rows_done is None else rows_done
    path.mkdir(parents=True)
    config = {
        "name": path.name,
        "seed": seed,
        "scenario": "class",
        "curriculum": {"name": "split-digits", "num_experiences": T},
        "learner": {"name": learner, **(learner_fields or {})},
    }
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    events = [{"event": "run_start", "experience": -1, "num_experiences": T}]
    events += [{"event": "baseline_eval", "experience": -1, "target": j, "metrics": {"accuracy": float(b[j])}} for j in range(T)]
    events.append({"event": "experience_end", "experience": -1})
    for i in range(rows_done):
        events.append({"event": "wake", "experience": i, "metrics": {"loss": 1.0 / (i + 1)}, "wall_s": 0.1})
        for j in range(T):
            metrics = {"accuracy": float(R[i, j])} | {key: float(v[i, j]) for key, v in (extra_eval or {}).items()}
            events.append({"event": "eval", "experience": i, "target": j, "metrics": metrics})
        events.append({"event": "experience_end", "experience": i})
        _write_checkpoint(path, i)
    (path / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    lines = ["row," + ",".join(map(str, range(T))), "init," + ",".join(map(str, b.tolist()))]
    lines += [f"{i}," + ",".join(map(str, R[i].tolist())) for i in range(rows_done)]
    (path / "accuracy_matrix.csv").write_text("\n".join(lines) + "\n")
    if rows_done == T:
        summary = summarize(R, b) | {"learner": learner, "seed": seed, "num_experiences": T}
        (path / "summary.json").write_text(json.dumps(summary))
    return path


def _write_checkpoint(path: Path, index: int) -> None:
    data = save({"weight": torch.full((2, 2), float(index))})
    folder = path / "checkpoints"
    folder.mkdir(exist_ok=True)
    (folder / f"exp-{index:04d}.safetensors").write_bytes(data)
    meta = {"experience": index, "sha256": hashlib.sha256(data).hexdigest()}
    (folder / f"exp-{index:04d}.json").write_text(json.dumps(meta))


R3 = np.array([[0.90, 0.10, 0.00], [0.95, 0.95, 0.20], [0.70, 0.50, 0.80]])
B3 = np.array([0.10, 0.20, 0.05])


def test_complete_run_reads_back(tmp_path):
    run = load_run(write_run(tmp_path / "run", R3, B3, learner="replay", learner_fields={"buffer": 200}))
    assert run.complete and run.warnings == []
    np.testing.assert_array_equal(run.matrix, R3)
    np.testing.assert_array_equal(run.baseline, B3)
    assert run.get("learner.buffer") == 200 and run.get("learner.missing", "x") == "x"
    assert [c.index for c in run.checkpoints()] == [0, 1, 2]
    assert run.checkpoints()[1].load()["weight"][0, 0].item() == 1.0


def test_partial_run_with_torn_last_event_line(tmp_path):
    path = write_run(tmp_path / "run", R3, B3, rows_done=2)
    with (path / "metrics.jsonl").open("a") as handle:
        handle.write('{"event": "wake", "experie')  # crash mid-write
    run = load_run(path)
    assert not run.complete and run.rows_done == 2 and run.num_experiences == 3
    np.testing.assert_array_equal(run.square(), R3[:2, :2])
    assert any("unreadable line" in w for w in run.warnings)


def test_events_are_trusted_up_to_the_first_damaged_line(tmp_path):
    """A damaged line in the middle (flipped bytes, a non-integer experience) ends the trusted prefix, so the
    matrix rebuilt from events keeps only the experiences committed before it."""
    for damage in ("{not json", '{"event": "eval", "experience": "one"}'):
        path = write_run(tmp_path / f"run-{len(damage)}", R3, B3)
        lines = (path / "metrics.jsonl").read_text().splitlines()
        cut = next(n for n, line in enumerate(lines) if '"experience": 1' in line)
        lines[cut] = damage
        (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        (path / "accuracy_matrix.csv").unlink()
        run = load_run(path)
        np.testing.assert_array_equal(run.matrix, R3[:1])
        assert any(f"metrics.jsonl:{cut + 1}: unreadable line" in w for w in run.warnings)


def test_missing_matrix_is_rebuilt_from_events(tmp_path):
    path = write_run(tmp_path / "run", R3, B3, rows_done=2)
    (path / "accuracy_matrix.csv").unlink()
    run = load_run(path)
    np.testing.assert_array_equal(run.matrix, R3[:2])
    np.testing.assert_array_equal(run.baseline, B3)
    assert any("rebuilt" in w for w in run.warnings)


def test_checkpoint_problems_name_the_file(tmp_path):
    path = write_run(tmp_path / "run", R3, B3)
    corrupt = path / "checkpoints" / "exp-0001.safetensors"
    corrupt.write_bytes(corrupt.read_bytes()[:-3] + b"xyz")
    (path / "checkpoints" / "exp-0002.safetensors").unlink()
    problems = [c.problem() for c in load_run(path).checkpoints()]
    assert problems[0] is None
    assert str(corrupt) in problems[1] and "sha256 mismatch" in problems[1]
    assert "exp-0002.safetensors: missing" in problems[2]
    with pytest.raises(CheckpointError, match="exp-0001"):
        load_run(path).checkpoints()[1].load()


def test_eval_metric_matrix_and_not_a_run(tmp_path):
    perplexity = 10 * R3 + 1
    run = load_run(write_run(tmp_path / "run", R3, B3, extra_eval={"perplexity": perplexity}))
    np.testing.assert_allclose(run.eval_metric("perplexity"), perplexity)
    assert run.eval_metric("exact_match") is None
    with pytest.raises(ValueError, match="no config.yaml"):
        load_run(tmp_path)
