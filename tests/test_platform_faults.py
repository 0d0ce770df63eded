"""Faults a lifelong run must survive: a killed learner actor, a SIGKILLed driver, a lost node.
Each ends with the metrics of an uninterrupted run. (Bad cluster addresses: tests/test_ray_isolation.py.)"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from helpers import events_without_timing, fast_config

from somna.platform import local_ray
from somna.platform.rundir import RunDirectory
from somna.platform.runner import run

LONGER = ["learner.hidden=[64]", "learner.epochs=15", "logging.progress=false"]


def _wait_for_commit(run_dir: Path, experience: int, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if RunDirectory(run_dir).completed_experiences() > experience:
            return
        time.sleep(0.02)
    raise TimeoutError(f"experience {experience} never committed in {run_dir}")


def _run_in_thread(cfg, run_dir):
    outcome: dict = {}

    def target():
        try:
            outcome["summary"] = run(cfg, run_dir)
        except BaseException as error:  # surfaced by the test
            outcome["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


@pytest.mark.slow
def test_killed_learner_actor_is_rebuilt_and_metrics_are_unchanged(tmp_path, ray_session):
    reference = run(fast_config("executor=inline", *LONGER), tmp_path / "reference")
    run_dir = tmp_path / "killed"
    thread, outcome = _run_in_thread(fast_config("executor=ray", *LONGER), run_dir)
    _wait_for_commit(run_dir, 1)
    ray_session.kill(ray_session.get_actor(f"somna-learner:{run_dir.resolve()}"))
    thread.join(timeout=600)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["summary"] == reference
    events = events_without_timing(run_dir)
    assert any(e["event"] == "actor_restart" for e in events)
    without_restart = [e for e in events if e["event"] != "actor_restart"]
    assert without_restart == events_without_timing(tmp_path / "reference")


@pytest.mark.slow
def test_sigkilled_driver_is_finished_by_somna_resume(tmp_path):
    overrides = ["executor=inline", *LONGER]
    straight = run(fast_config(*overrides), tmp_path / "straight")
    run_dir = tmp_path / "crashed"
    somna = [sys.executable, "-m", "somna.platform.cli"]
    driver = subprocess.Popen([*somna, "run", "split-digits", *overrides, "--out", str(run_dir)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_commit(run_dir, 1)
        os.kill(driver.pid, signal.SIGKILL)
    finally:
        driver.wait()
    assert RunDirectory(run_dir).completed_experiences() < 5, "the run finished before it could be killed"
    assert not (run_dir / "summary.json").exists()
    resumed = subprocess.run([*somna, "resume", str(run_dir)], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run_dir / "summary.json").read_text()) == straight
    assert events_without_timing(run_dir) == events_without_timing(tmp_path / "straight")


@pytest.fixture
def cluster(monkeypatch):
    """Head + 2 worker nodes in this process; any session Ray is paused and restored around it.

    Its files (and the address file Cluster writes for `ray.init("auto")`) go to a temp folder of
    its own, not to the Ray folder other clusters on this machine share."""
    import ray
    from ray.cluster_utils import Cluster

    had_session = ray.is_initialized()
    if had_session:
        local_ray.shutdown()
    ray_tmpdir = tempfile.mkdtemp(prefix="somna-ray-")  # short: Ray's socket paths live under it
    monkeypatch.setenv("RAY_TMPDIR", ray_tmpdir)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        cluster.add_node(num_cpus=1, resources={"learner_node": 1})
        cluster.add_node(num_cpus=2, resources={"eval_node": 2})
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(ray_tmpdir, ignore_errors=True)
        if had_session:
            local_ray.start(2, log_to_driver=False)


@pytest.mark.slow
def test_multi_node_placement_gives_local_metrics(tmp_path, cluster):
    placed = ["resources.wake.custom.learner_node=1", "resources.eval.custom.eval_node=1"]
    local = run(fast_config("executor=inline"), tmp_path / "local")
    spread = run(fast_config("executor=ray", *placed), tmp_path / "cluster")
    assert spread == local
    events = [json.loads(line) for line in (tmp_path / "cluster" / "metrics.jsonl").read_text().splitlines()]
    wake_nodes = {e["node_id"] for e in events if e["event"] == "wake"}
    eval_nodes = {e["node_id"] for e in events if e["event"] == "eval"}
    import ray

    # cluster.worker_nodes is unordered: find each node by the custom resource it offers
    by_resource = {name: node["NodeID"] for node in ray.nodes() for name in node["Resources"] if name.endswith("_node")}
    learner_node, eval_node = by_resource["learner_node"], by_resource["eval_node"]
    assert wake_nodes == {learner_node}
    assert eval_nodes == {eval_node}


@pytest.mark.slow
def test_run_completes_when_the_learner_node_is_removed(tmp_path, cluster):
    spare = cluster.add_node(num_cpus=1, resources={"learner_node": 1})
    cluster.wait_for_nodes()
    reference = run(fast_config("executor=inline", *LONGER), tmp_path / "reference")
    run_dir = tmp_path / "lost-node"
    cfg = fast_config("executor=ray", *LONGER, "resources.wake.custom.learner_node=1")
    thread, outcome = _run_in_thread(cfg, run_dir)
    _wait_for_commit(run_dir, 1)
    wake_node = next(json.loads(l)["node_id"] for l in (run_dir / "metrics.jsonl").read_text().splitlines()
                     if json.loads(l)["event"] == "wake")
    doomed = next(n for n in [*cluster.worker_nodes, spare] if n.node_id == wake_node)
    cluster.remove_node(doomed)
    thread.join(timeout=600)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["summary"] == reference
