"""Run directories at a URI: mirrored after every commit, resumable from the remote copy alone."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import events_without_timing, fast_config

from somna.platform.cli import main
from somna.platform.runner import run
from somna.platform.storage import RemoteRunDirectory

FAST = ["learner.hidden=[32]", "learner.epochs=1", "executor=inline", "logging.progress=false"]


def test_run_to_a_uri_mirrors_the_run_directory(tmp_path, capsys):
    remote = tmp_path / "bucket" / "run"
    uri = f"file://{remote}"
    assert main(["run", "split-digits", *FAST, "--out", uri]) == 0
    local = run(fast_config("executor=inline"), tmp_path / "local")
    assert json.loads((remote / "summary.json").read_text()) == local
    assert (remote / "checkpoints" / "exp-0004.safetensors").is_file()
    assert events_without_timing(remote) == events_without_timing(tmp_path / "local")
    capsys.readouterr()
    assert main(["run", "split-digits", *FAST, "--out", uri]) == 2
    assert "already exists" in capsys.readouterr().err


def test_resume_from_the_remote_copy_alone(tmp_path):
    cfg = fast_config("executor=inline")
    straight = run(cfg, tmp_path / "straight")
    partial = tmp_path / "partial"

    def crash_after_two(experience):
        if experience == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(cfg, partial, on_experience_end=crash_after_two)
    remote = tmp_path / "bucket" / "run"
    shutil.copytree(partial, remote)
    uri = f"file://{remote}"
    shutil.rmtree(RemoteRunDirectory(uri).local, ignore_errors=True)  # the crashed machine's staging is gone
    assert main(["resume", uri]) == 0
    assert json.loads((remote / "summary.json").read_text()) == straight
    assert events_without_timing(remote) == events_without_timing(tmp_path / "straight")
