"""The Python API (`import somna`) and the CLI helpers a newcomer reaches for: config by curriculum, `somna config`, --version."""

from __future__ import annotations

import errno
import json

import pytest
import yaml

import somna
from somna.platform.cli import main
from somna.platform.config import ConfigError, EnvironmentProblem, load_config

FAST = ("learner.hidden=[32]", "learner.epochs=1", "logging.progress=false")


def test_run_returns_the_run_directory_read_back(tmp_path):
    run = somna.run("split-digits", *FAST, out=tmp_path / "run", learner="replay", seed=3, executor="inline")
    assert run.complete and run.summary == json.loads((tmp_path / "run" / "summary.json").read_text())
    assert run.summary["learner"] == "replay" and run.summary["seed"] == 3 and run.matrix.shape == (5, 5)
    assert run.get("learner.buffer") == 200 and somna.load_run(tmp_path / "run").summary == run.summary
    with pytest.raises(ConfigError, match="already exists"):
        somna.run("split-digits", *FAST, out=tmp_path / "run", learner="replay", seed=3, executor="inline")
    again = somna.run("split-digits", *FAST, out=tmp_path / "run", learner="replay", seed=3, executor="inline", overwrite=True)
    assert again.summary == run.summary  # same seed, same metrics


def test_overwrite_only_replaces_a_run_directory(tmp_path, monkeypatch):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    with pytest.raises(ConfigError, match="not a somna run directory"):
        somna.run("split-digits", *FAST, out=folder, executor="inline", overwrite=True)
    monkeypatch.chdir(folder)
    with pytest.raises(ConfigError, match="current directory or one of its parents"):
        somna.run("split-digits", *FAST, out=tmp_path, executor="inline", overwrite=True)
    assert (folder / "thesis.tex").read_text() == "years of work"


def test_a_curriculum_without_a_preset_runs_by_name_with_finetune():
    cfg = load_config("permuted-digits", ["curriculum.num_experiences=2"])
    assert cfg.curriculum.name == "permuted-digits" and cfg.learner.name == "finetune" and cfg.scenario == "domain"
    with pytest.raises(ConfigError, match="unknown preset or curriculum 'wine-split'.*curricula: .*split-digits"):
        load_config("wine-split")


def test_somna_config_prints_a_runnable_config_with_help(tmp_path, capsys):
    assert main(["config", "split-digits-sleep", "seed=4"]) == 0
    text = capsys.readouterr().out
    assert "seed: 4  # every random draw" in text
    assert "fast_beta: 1.0  # delta-rule write strength" in text
    assert "steps: 500  # rehearsal steps of the slow network" in text  # a stage option with its default
    saved = tmp_path / "mine.yaml"
    saved.write_text(text)
    assert yaml.safe_load(text)["learner"]["sleep"]["options"]["dreaming"]["steps"] == 500
    assert load_config(str(saved)).learner.fast_beta == load_config("split-digits-sleep").learner.fast_beta


def test_version_and_run_help_list_the_config_keys(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"somna {somna.__version__}"
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "logging.tensorboard" in capsys.readouterr().out


def test_the_api_raises_what_the_cli_prints(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as error:
        somna.run("split-digits", *FAST, "learner.lr=inf", out=out, executor="inline")
    assert main(["run", "split-digits", *FAST, "learner.lr=inf", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == f"somna: error: {error.value}"

    def disk_full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("somna.platform.rundir.atomic_write", disk_full)
    with pytest.raises(EnvironmentProblem, match="no space left on device") as problem:
        somna.run("split-digits", *FAST, out=out, executor="inline")
    assert main(["run", "split-digits", *FAST, "executor=inline", "--out", str(out)]) == 1
    assert capsys.readouterr().err.strip() == f"somna: error: {problem.value}"
    assert not out.exists()
