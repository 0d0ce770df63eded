"""How somna starts, joins and stops Ray.

Without `ray.address` a run starts a fresh local Ray of its own that listens on loopback only,
whatever other Ray cluster runs or once ran on the machine, and no Ray process of it outlives
its driver, however the driver dies. Joining happens only when asked, and a bad address is a
one-line error at once.
"""

from __future__ import annotations

import http.server
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from helpers import FAST_DIGITS, fast_config

from somna.platform import executors, local_ray
from somna.platform.config import ConfigError, EnvironmentProblem
from somna.platform.rundir import RunDirectory
from somna.platform.runner import run

SOMNA = [sys.executable, "-m", "somna.platform.cli"]
RAY_CLI = str(Path(sys.executable).with_name("ray"))
RAY_PROCESS_NAMES = {"gcs_server", "raylet", "ray::DashboardAgent", "ray::RuntimeEnvAgent"}
LONGER = ["learner.hidden=[64]", "learner.epochs=15", "logging.progress=false"]
ORPHAN_GRACE_S = 30


def _listening_sockets(processes: list[psutil.Process]) -> dict[str, set[str]]:
    """Process name -> the addresses it listens on (TCP), for the processes that listen at all."""
    listening: dict[str, set[str]] = {}
    for process in processes:
        try:
            addresses = {c.laddr.ip for c in process.net_connections("inet") if c.status == psutil.CONN_LISTEN}
            if addresses:
                listening.setdefault(process.name(), set()).update(addresses)
        except psutil.Error:  # ended meanwhile
            continue
    return listening


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback  # ::ffff:127.0.0.1 too


def _assert_loopback_only(listening: dict[str, set[str]]) -> None:
    exposed = {name: sorted(ip for ip in ips if not _is_loopback(ip)) for name, ips in listening.items()}
    assert not any(exposed.values()), f"listening beyond loopback: {exposed}"
    assert RAY_PROCESS_NAMES <= set(listening), f"expected every Ray server among {sorted(listening)}"
    assert any(name.startswith("ray::") and name not in RAY_PROCESS_NAMES for name in listening), "no worker listening"


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (a zombie is dead: it holds no socket, it only waits to be reaped)."""
    still = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                still.append(process)
        except psutil.Error:
            continue
    return still


def _kill(processes: list[psutil.Process]) -> None:
    for process in processes:
        try:
            process.kill()
        except psutil.Error:
            continue


def _wait_for_commit(run_dir: Path, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while RunDirectory(run_dir).completed_experiences() < 1:
        assert time.time() < deadline, f"no experience committed in {run_dir}"
        time.sleep(0.1)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    """The error a failed command printed: one line, the last, and no traceback (the run's header may come first)."""
    assert result.returncode == 1  # the machine's problem, not the input's
    errors = [line for line in result.stderr.splitlines() if line.startswith("somna: error:")]
    assert len(errors) == 1 and result.stderr.strip().endswith(errors[0]), result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return errors[0]


# ---- the embedded cluster listens on loopback only -------------------------------------------


def test_embedded_ray_listens_on_loopback_only(ray_session):
    """The session Ray is started as `somna run` starts it: read the listening sockets of every process of it."""

    class Actor:  # defined here: Ray ships it by value (workers cannot import this test module)
        def pid(self) -> int:
            return os.getpid()

    def pid() -> int:
        return os.getpid()

    actor = ray_session.remote(Actor).remote()
    ray_session.get([ray_session.remote(pid).remote(), actor.pid.remote()])
    driver = psutil.Process()
    listening = _listening_sockets([driver, *driver.children(recursive=True)])
    ray_session.kill(actor)
    _assert_loopback_only(listening)


def test_connect_ray_asks_for_the_dashboard_only_when_configured_and_on_loopback(monkeypatch):
    import ray

    seen: list[dict] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(local_ray, "start", lambda num_cpus, **options: seen.append(options))
    executors.connect_ray(fast_config())
    executors.connect_ray(fast_config("ray.dashboard=true"))
    assert seen == [{"dashboard": False, "dashboard_host": "127.0.0.1"}, {"dashboard": True, "dashboard_host": "127.0.0.1"}]


# ---- joining only when asked: a bad address is one line, at once ----------------------------


@pytest.fixture
def web_server() -> Iterator[str]:
    """host:port of something that accepts TCP but is not Ray: a web server."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent_server() -> Iterator[str]:
    """host:port that accepts TCP connections and never says a word."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield f"127.0.0.1:{server.getsockname()[1]}"


def test_an_address_that_is_not_ray_is_an_environment_problem_at_once(web_server, silent_server):
    started = time.time()
    with pytest.raises(EnvironmentProblem, match="answers but is not a Ray cluster"):
        executors._probe(web_server, 5)
    with pytest.raises(EnvironmentProblem, match="cannot reach Ray at .* within 1s"):
        executors._probe(silent_server, 1)
    assert time.time() - started < 5


def test_a_bad_address_format_is_a_config_error():
    with pytest.raises(ConfigError, match="expected auto, host:port") as raised:
        executors._probe("not-an-address", 1)
    assert type(raised.value) is ConfigError


@pytest.mark.parametrize("server, message", [("web", "is not a Ray cluster"), ("closed", "cannot reach Ray at")])
def test_somna_run_with_a_bad_address_fails_in_one_line(tmp_path, web_server, server, message):
    address = web_server if server == "web" else f"127.0.0.1:{_free_port()}"
    started = time.time()
    result = subprocess.run(
        [*SOMNA, "run", "split-digits", "--address", address, "ray.connect_timeout_s=3", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120,
    )
    assert message in _one_line_error(result)
    assert time.time() - started < 30


# ---- a run with a SIGKILLed driver leaves no Ray process ------------------------------------


@pytest.mark.slow
def test_a_real_run_listens_on_loopback_only_and_its_sigkilled_driver_leaves_no_ray_process(tmp_path):
    run_dir = tmp_path / "run"
    driver = subprocess.Popen(
        [*SOMNA, "run", "split-digits", *LONGER, "ray.num_cpus=2", "ray.dashboard=true", "--out", str(run_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    tree: list[psutil.Process] = []
    try:
        _wait_for_commit(run_dir)
        tree = psutil.Process(driver.pid).children(recursive=True)
        listening = _listening_sockets([psutil.Process(driver.pid), *tree])
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        deadline = time.time() + ORPHAN_GRACE_S
        while _alive(tree) and time.time() < deadline:
            time.sleep(0.5)
        left = [f"{p.pid} {p.name()}" for p in _alive(tree)]
    finally:
        driver.kill()
        _kill(tree)
    assert not left, f"Ray processes left {ORPHAN_GRACE_S} s after the driver's SIGKILL: {left}"
    _assert_loopback_only(listening)


# ---- the default run is unaffected by another Ray cluster on the machine ---------------------


@dataclass
class RayStartHead:
    """A `ray start --head` cluster in a temp folder of its own (its address file is there too)."""

    address: str
    env: dict[str, str]  # what a user's shell would have: RAY_TMPDIR pointing at the head's folder
    process: psutil.Process

    @property
    def address_file(self) -> Path:
        return Path(self.env["RAY_TMPDIR"]) / "ray" / "ray_current_cluster"

    def processes(self) -> list[psutil.Process]:
        return [self.process, *self.process.children(recursive=True)]

    def kill(self) -> None:
        """Die without cleaning up, as after a crash: every process SIGKILLed, the address file left behind."""
        _kill(self.processes())


@pytest.fixture
def ray_start_head() -> Iterator[RayStartHead]:
    folder = tempfile.mkdtemp(prefix="somna-head-")  # short: Ray's socket paths live under it
    env = {**os.environ, "RAY_TMPDIR": folder, "RAY_AUTH_MODE": "disabled"}
    port = _free_port()
    head = subprocess.Popen(
        [RAY_CLI, "start", "--head", "--block", "--num-cpus=1", "--include-dashboard=false", "--disable-usage-stats",
         f"--port={port}", f"--ray-client-server-port={_free_port()}", f"--dashboard-agent-listen-port={_free_port()}",
         f"--dashboard-agent-grpc-port={_free_port()}", f"--runtime-env-agent-port={_free_port()}",
         f"--metrics-export-port={_free_port()}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    cluster = RayStartHead(f"127.0.0.1:{port}", env, psutil.Process(head.pid))
    try:
        deadline = time.time() + 120
        while not cluster.address_file.exists():
            assert head.poll() is None and time.time() < deadline, "ray start --head did not come up"
            time.sleep(0.2)
        yield cluster
    finally:
        processes = cluster.processes()
        _kill(processes)
        psutil.wait_procs(processes, timeout=10)
        head.wait()
        shutil.rmtree(folder, ignore_errors=True)


def _somna_run(run_dir: Path, env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SOMNA, "run", "split-digits", *FAST_DIGITS, "ray.num_cpus=2", *arguments, "--out", str(run_dir)],
        capture_output=True, text=True, timeout=300, env=env,
    )


def _node_ids(run_dir: Path) -> set[str]:
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {event["node_id"] for event in events if "node_id" in event}


def _cluster_node_ids(cluster: RayStartHead) -> set[str]:
    """Join the head (in a process of its own, as a user would) and list its live nodes."""
    script = "import json, ray; ray.init(address='auto'); print(json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive']]))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=cluster.env)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
def test_the_default_run_starts_its_own_ray_beside_a_running_ray_start_cluster(tmp_path, ray_start_head):
    reference = run(fast_config("executor=inline"), tmp_path / "reference")
    head_processes = ray_start_head.processes()
    address_file = ray_start_head.address_file.read_text()
    env = {**ray_start_head.env, "RAY_ADDRESS": ray_start_head.address}  # as `ray start` tells users to set
    result = _somna_run(tmp_path / "run", env)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == reference
    assert len(_alive(head_processes)) == len(head_processes), "the head lost processes"
    assert ray_start_head.address_file.read_text() == address_file
    assert not _node_ids(tmp_path / "run") & _cluster_node_ids(ray_start_head), "the run used the head's node"


@pytest.mark.slow
def test_the_default_run_ignores_the_address_file_of_a_dead_cluster(tmp_path, ray_start_head):
    reference = run(fast_config("executor=inline"), tmp_path / "reference")
    ray_start_head.kill()
    assert ray_start_head.address_file.exists()
    result = _somna_run(tmp_path / "run", ray_start_head.env)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == reference
    # asked to join the cluster found on this machine, it names the dead one in a line, at once
    started = time.time()
    joined = _somna_run(tmp_path / "auto", ray_start_head.env, "--address", "auto", "ray.connect_timeout_s=3")
    assert "cannot reach Ray at auto" in _one_line_error(joined)
    assert time.time() - started < 30
