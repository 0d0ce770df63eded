"""`somna sweep`: grid parsing, skipping finished trials, and (slow) resuming a real sweep after a trial is deleted."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from somna.platform.config import ConfigError, load_config, to_yaml
from somna.platform.sweep import expand, load_variants, parse_grid, run_sweep, split_values, trial_state

TINY = ["learner.epochs=1", "learner.hidden=[16]", "curriculum.num_experiences=2"]


def test_split_values_keeps_brackets_together():
    assert split_values("finetune,replay") == ["finetune", "replay"]
    assert split_values("[64,64],[128]") == ["[64,64]", "[128]"]
    assert split_values("{a: 1, b: 2}") == ["{a: 1, b: 2}"]


def test_grid_expansion_names_trials_from_grid_overrides(tmp_path):
    fixed, axes = parse_grid(["learner=finetune,replay", "seed=0,1,2", "learner.hidden=[16,16]"])
    assert fixed == ["learner.hidden=[16,16]"] and axes == {"learner": ["finetune", "replay"], "seed": ["0", "1", "2"]}
    trials = expand(fixed, axes, tmp_path)
    assert [t.name for t in trials][:4] == ["learner=finetune,seed=0", "learner=finetune,seed=1", "learner=finetune,seed=2", "learner=replay,seed=0"]
    assert trials[4].run_dir == tmp_path / "learner=replay,seed=1"
    assert trials[4].overrides == ("learner.hidden=[16,16]", "learner=replay", "seed=1")
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_grid(["seed"])
    with pytest.raises(ConfigError, match="empty value"):
        parse_grid(["seed=0,,1"])


def test_variants_are_table_rows_times_the_grid_and_recorded_in_the_config(tmp_path):
    path = tmp_path / "rows.yaml"
    path.write_text("base: []\nwide: ['learner.hidden=[64]', learner.lr=0.1]\n")
    variants = load_variants(path)
    trials = expand(["learner.epochs=1"], {"seed": ["0", "1"]}, tmp_path, variants)
    assert [t.name for t in trials] == ["variant=base,seed=0", "variant=base,seed=1", "variant=wide,seed=0", "variant=wide,seed=1"]
    assert trials[2].overrides == ("learner.epochs=1", "learner.hidden=[64]", "learner.lr=0.1", "variant=wide", "seed=0")
    cfg = load_config("split-digits", list(trials[2].overrides))
    assert cfg.variant == "wide" and list(cfg.learner.hidden) == [64]
    for text, message in [("[a, b]", "must map"), ("'a b': []", "needs a label"), ("a: x=1", "needs a label"), ("a: [", "not valid YAML")]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_variants(path)
    with pytest.raises(ConfigError, match="not found"):
        load_variants(tmp_path / "missing.yaml")


def _finished_trial_dir(run_dir, cfg, acc: float) -> None:
    """A run directory as the loop leaves it, with made-up numbers (so no training is needed)."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    R = np.array([[acc, 0.0], [acc / 2, acc]])
    (run_dir / "accuracy_matrix.csv").write_text(f"row,0,1\ninit,0.1,0.1\n0,{acc},0.0\n1,{acc / 2},{acc}\n")
    (run_dir / "metrics.jsonl").write_text("")
    summary = {"acc": float(R[1].mean()), "bwt": -acc / 2, "fwt": -0.1, "forgetting": acc / 2}
    (run_dir / "summary.json").write_text(json.dumps(summary))


def test_finished_trials_are_not_rerun_and_a_changed_config_is_refused(tmp_path, capsys):
    out = tmp_path / "sweep"
    for seed, acc in ((0, 0.8), (1, 0.6)):
        cfg = load_config("split-digits", TINY + [f"seed={seed}"])
        _finished_trial_dir(out / f"seed={seed}", cfg, acc)
    comparison, paths, failed = run_sweep("split-digits", TINY + ["seed=0,1"], out)  # nothing pending: Ray never starts
    assert failed == [] and capsys.readouterr().out.count("finished earlier, not rerun") == 2
    assert comparison.groups == ["finetune"] and comparison.cells["finetune"]["acc"].mean == pytest.approx((0.6 + 0.45) / 2)
    assert paths["md"] == out / "compare.md"

    (trial,) = expand([], {"seed": ["0"]}, out)
    assert trial_state(trial, load_config("split-digits", TINY + ["seed=0"])) == "done"
    (out / "seed=0" / "summary.json").unlink()
    assert trial_state(trial, load_config("split-digits", TINY + ["seed=0"])) == "partial"
    with pytest.raises(ConfigError, match="different config"):
        trial_state(trial, load_config("split-digits", TINY + ["seed=0", "learner.lr=0.5"]))


@pytest.mark.slow
def test_real_sweep_resumes_after_one_trial_is_deleted(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    out = tmp_path / "sweep"
    arguments = TINY + ["learner=finetune,replay"]  # seed stays 0: a single value is a fixed override, not an axis
    comparison, _, failed = run_sweep("split-digits", arguments, out, num_cpus=2)
    assert failed == [] and comparison.groups == ["finetune", "replay"]
    kept, deleted = out / "learner=finetune", out / "learner=replay"
    kept_summary = (kept / "summary.json").read_bytes()
    kept_mtime = (kept / "summary.json").stat().st_mtime_ns
    deleted_summary = (deleted / "summary.json").read_bytes()
    shutil.rmtree(deleted)
    capsys.readouterr()

    comparison, _, failed = run_sweep("split-digits", arguments, out, num_cpus=2)
    printed = capsys.readouterr().out
    assert failed == [] and "2 trials, 1 to run" in printed
    assert "learner=finetune: finished earlier, not rerun" in printed
    assert "started learner=replay" in printed and "started learner=finetune" not in printed
    assert (kept / "summary.json").stat().st_mtime_ns == kept_mtime and (kept / "summary.json").read_bytes() == kept_summary
    assert (deleted / "summary.json").read_bytes() == deleted_summary  # same seed, same numbers
