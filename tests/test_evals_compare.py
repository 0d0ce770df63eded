"""`compare` on synthetic run directories: grouping (never across streams), mean ± t-CI over seeds, best marked, joint
intransigence, bad runs skipped by name, its own outputs read back, CI bars within range."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import yaml
from scipy import stats
from test_evals_rundir import B3, R3, write_run

from somna.evals import metrics
from somna.evals.compare import compare, compare_runs, find_runs
from somna.evals.rundir import load_run

REPLAY = R3.copy()
REPLAY[2] = [0.90, 0.85, 0.80]  # remembers the old experiences
JOINT = np.array([[0.92, 0.0, 0.0], [0.9, 0.97, 0.0], [0.95, 0.95, 0.95]])


@pytest.fixture
def runs_dir(tmp_path):
    root = tmp_path / "runs"
    for seed in (0, 1, 2):
        write_run(root / f"finetune-s{seed}", R3 + 0.01 * seed, B3, seed=seed)
    write_run(root / "finetune-s3", R3, B3, seed=3, rows_done=1)  # crashed: must be skipped
    for seed, buffer in ((0, 100), (1, 200)):
        write_run(root / f"replay-s{seed}", REPLAY + 0.02 * seed, B3, learner="replay", seed=seed, learner_fields={"buffer": buffer})
    for seed in (0, 1):
        write_run(root / f"joint-s{seed}", JOINT, B3, learner="joint", seed=seed)
    return root


def test_groups_and_seed_statistics(runs_dir):
    comparison = compare_runs([load_run(p) for p in find_runs([runs_dir])])
    assert comparison.groups == ["finetune", "joint", "replay"]
    assert sorted(comparison.seeds["finetune"]) == [0, 1, 2]
    assert comparison.skipped == [f"{runs_dir / 'finetune-s3'}: partial (1 of 3 experiences)"]
    acc = comparison.cells["finetune"]["acc"]
    seeds_acc = [metrics.acc(R3 + 0.01 * s) for s in (0, 1, 2)]
    assert acc.mean == pytest.approx(np.mean(seeds_acc)) and acc.n == 3
    assert acc.half_width == pytest.approx(stats.t.ppf(0.975, 2) * 0.01 / math.sqrt(3))
    # intransigence against the joint run of the same seed; seed 2 has none, so n = 2
    intransigence = comparison.cells["finetune"]["intransigence"]
    expected = [metrics.intransigence(R3 + 0.01 * s, JOINT) for s in (0, 1)]
    assert intransigence.n == 2 and intransigence.mean == pytest.approx(np.mean(expected))
    assert comparison.cells["joint"]["intransigence"].mean == pytest.approx(0.0)


def test_best_per_column_respects_direction(runs_dir):
    comparison = compare_runs([load_run(p) for p in find_runs([runs_dir])])
    forgetting = {g: comparison.cells[g]["forgetting"].mean for g in comparison.groups}
    assert max(forgetting, key=forgetting.get) == "finetune"
    assert comparison.best("forgetting") == {"joint"}  # lowest wins for forgetting-like metrics
    assert comparison.best("forgetting_first") == {"joint"}
    assert comparison.best("intransigence") == {"joint"}  # 0 against itself
    assert comparison.best("acc") == comparison.best("bwt") == {"joint"}  # highest wins elsewhere
    assert comparison.best("fwt") == {"finetune", "replay"}  # equal means (same offsets on average): both marked


def test_written_tables_and_plot(runs_dir, tmp_path):
    comparison, paths = compare([str(runs_dir / "*")], out_dir=tmp_path / "out")
    markdown = paths["md"].read_text()
    joint_row = next(line for line in markdown.splitlines() if line.startswith("| joint |"))
    assert "| **0.950 ± 0.000** |" in joint_row  # acc, best and bold; identical seeds give a zero-width interval
    finetune_row = next(line for line in markdown.splitlines() if line.startswith("| finetune |"))
    assert finetune_row.startswith("| finetune | 3 | 0,1,2 | 0.677 ± 0.025 |")
    with paths["csv"].open() as handle:
        rows = {row["learner"]: row for row in csv.DictReader(handle)}
    assert float(rows["replay"]["acc_mean"]) == pytest.approx(np.mean([metrics.acc(REPLAY + 0.02 * s) for s in (0, 1)]))
    assert rows["replay"]["runs"] == "2"
    assert paths["png"].read_bytes().startswith(b"\x89PNG")


def test_cli_compare_by_dotted_key(runs_dir, tmp_path, capsys):
    from somna.platform.cli import main

    assert main(["compare", str(runs_dir / "replay-*"), "--by", "learner.buffer", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "| learner.buffer | runs | seeds |" in out
    assert "| 100 | 1 | 0 |" in out and "| 200 | 1 | 1 |" in out
    assert main(["compare", str(tmp_path / "nothing-*")]) == 2
    assert "matches nothing" in capsys.readouterr().err


def test_compare_a_glob_twice_reads_its_own_outputs_back(runs_dir, capsys):
    from somna.platform.cli import main

    assert main(["compare", str(runs_dir / "*")]) == 0
    assert (runs_dir / "compare.csv").is_file()
    first = capsys.readouterr().out
    assert main(["compare", str(runs_dir / "*")]) == 0
    assert capsys.readouterr().out == first


def test_runs_of_different_streams_never_share_a_row(tmp_path):
    write_run(tmp_path / "class-s0", R3, B3, seed=0)
    write_run(tmp_path / "class-s1", R3 + 0.01, B3, seed=1)
    task = write_run(tmp_path / "task-s0", REPLAY, B3, seed=0)
    config = yaml.safe_load((task / "config.yaml").read_text()) | {"scenario": "task"}
    (task / "config.yaml").write_text(yaml.safe_dump(config))
    write_run(tmp_path / "four", np.eye(4), np.zeros(4), seed=0)
    comparison = compare_runs([load_run(p) for p in find_runs([tmp_path])])
    assert comparison.by == ["scenario", "curriculum.num_experiences", "learner"]
    assert comparison.groups == ["scenario=class,num_experiences=3,learner=finetune", "scenario=class,num_experiences=4,learner=finetune",
                                 "scenario=task,num_experiences=3,learner=finetune"]
    assert sorted(comparison.seeds["scenario=class,num_experiences=3,learner=finetune"]) == [0, 1]


def test_bad_runs_are_named_and_skipped(runs_dir):
    (runs_dir / "replay-s1" / "summary.json").write_bytes(b"\x00garbage")
    (runs_dir / "joint-s1" / "config.yaml").write_text("learner: [\n")
    comparison, _ = compare([runs_dir], out_dir=runs_dir / "out")
    assert f"{runs_dir / 'replay-s1'}: no readable summary.json (unfinished or damaged)" in comparison.skipped
    assert any(s.startswith(f"{runs_dir / 'joint-s1' / 'config.yaml'} is not valid YAML (line 2") for s in comparison.skipped)
    assert comparison.seeds["replay"] == [0] and comparison.seeds["joint"] == [0]


def test_ci_bars_stop_at_the_metrics_range():
    from somna.evals.plots import _clipped_errors
    from somna.evals.stats import MeanCI

    errors = _clipped_errors([MeanCI(0.95, 0.2, 3), MeanCI(0.5, 0.1, 3), MeanCI(0.4, math.nan, 1), None], (0.0, 1.0))
    np.testing.assert_allclose(errors, [[0.2, 0.1, 0.0, 0.0], [0.05, 0.1, 0.0, 0.0]])
