"""The `somna` command as a user meets it: exit codes, one-line errors, nothing lost on disk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from somna.platform.cli import main
from somna.platform.registry import LEARNERS

SOMNA = [sys.executable, "-m", "somna.platform.cli"]
FAST = ["learner.hidden=[32]", "learner.epochs=1", "executor=inline", "logging.progress=false"]


def somna(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*SOMNA, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["run", "split-digits", "learner=nope"], "unknown learner 'nope'"),
        (["run", "split-digits", "lerner=replay"], "unknown key 'lerner'"),
        (["run", "split-digits", "learner.epochs=-1"], "learner.epochs must be >= 1"),
        (["run", "split-digits", "learner.hidden=[0]"], "hidden layer sizes must be >= 1"),
        (["run", "split-digits", "learner.epochs=x"], "bad value for 'learner.epochs'"),
        (["run", "split-digits", "learner.sleep.stages=[nap]"], "unknown sleep stage 'nap'"),
        (["run", "no/such/file.yaml"], "config file not found"),
        (["resume", "no-such-run-dir"], "no config.yaml"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, fragment, tmp_path, capsys):
    code = main([*args, "--out", str(tmp_path / "run")] if args[0] == "run" else args)
    stderr = capsys.readouterr().err
    assert code == 2, stderr
    assert fragment in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_a_bad_input_in_a_real_process_has_no_traceback(tmp_path):
    result = somna("run", "split-digits", "learner=nope", "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "somna: error: unknown learner 'nope'; choose one of: "
        + ", ".join(LEARNERS.names())
    )


def test_run_then_refuse_to_clobber_then_resume(tmp_path):
    run_dir = tmp_path / "run"
    first = somna("run", "split-digits", *FAST, "--out", str(run_dir))
    assert first.returncode == 0, first.stderr
    assert "ACC" in first.stdout
    summary = (run_dir / "summary.json").read_bytes()
    again = somna("run", "split-digits", *FAST, "--out", str(run_dir))
    assert again.returncode == 2 and "already exists" in again.stderr
    assert (run_dir / "summary.json").read_bytes() == summary
    different = somna("run", "split-digits", *FAST, "seed=5", "--out", str(run_dir), "--resume")
    assert different.returncode == 2 and "differs" in different.stderr
    resumed = somna("resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run_dir / "summary.json").read_text()) == json.loads(summary)


def test_listings_name_the_builtins():
    learners = somna("learners")
    assert learners.returncode == 0
    for name in ("finetune", "joint", "replay", "ewc", "lwf", "der"):
        assert name in learners.stdout
    curricula = somna("curricula")
    assert "split-digits" in curricula.stdout and "permuted-digits" in curricula.stdout
    assert "split-digits" in somna("presets").stdout
    assert "knowledge-seeding" in somna("stages").stdout


def test_works_from_the_repository_root_without_shadowing_stdlib_platform():
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", "import platform, somna.platform.cli; print(platform.system())"],
        capture_output=True, text=True, cwd=root,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_debug_adds_the_traceback_to_the_one_line(capsys):
    assert main(["run", "split-digits", "learner=nope", "--debug"]) == 2
    stderr = capsys.readouterr().err
    assert "Traceback (most recent call last)" in stderr
    assert stderr.strip().splitlines()[-1].startswith("somna: error: unknown learner 'nope'")


def test_an_unexpected_error_is_one_line_naming_its_traceback_file(monkeypatch, capsys):
    def broken(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("somna.platform.cmd_list._list_presets", broken)
    assert main(["presets"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("somna: error: unexpected ZeroDivisionError: a bug (full traceback in ")
    traceback_file = Path(line.split("full traceback in ")[1].split(";")[0])
    assert "ZeroDivisionError: a bug" in traceback_file.read_text()
    traceback_file.unlink()
