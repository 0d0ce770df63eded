"""The embedded Ray: a fresh local cluster that listens on 127.0.0.1 only and leaves no process behind.

Everything that runs Ray without a cluster address (`somna run`, `somna sweep`, the overhead
bench, the tests) starts it with `start` and stops it with `shutdown`:

- `ray.init(address="local")`: never join a cluster found on this machine (RAY_ADDRESS, the
  address file a `ray start` head leaves in Ray's temp folder, a running gcs_server).
- a temp folder of its own, deleted at the end: nothing is read from or written to the folder the
  other Ray clusters of this machine share (their address file, `session_latest`).
- loopback only: Ray binds every server (GCS, raylet, workers, agents, metrics ports) to the node
  IP, and in its local-only mode (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, the default on macOS and
  Windows) the node IP is 127.0.0.1. `ray.init(_node_ip_address="127.0.0.1")` does not do it: Ray
  swaps a loopback node IP for the routable one.
- a watchdog process (see `_watch`) that ends the cluster when the driver dies without shutting
  it down, e.g. on SIGKILL.

Joining a cluster (`ray.address`) is `executors.join_cluster`: Ray's own settings, none of the above.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

LOOPBACK = "127.0.0.1"
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's local-only mode, node IP 127.0.0.1
WATCH_INTERVAL_S = 0.5  # how often the watchdog reads the driver's process tree (about 2 ms of CPU each time)


@dataclass
class _EmbeddedCluster:
    temp_dir: Path
    watchdog: subprocess.Popen


_started: _EmbeddedCluster | None = None  # the embedded Ray this process started (Ray is one per process)


def start(num_cpus: int | None, *, dashboard: bool = False, dashboard_host: str = LOOPBACK, log_to_driver: bool = True) -> None:
    """Start a fresh local Ray in this process: loopback only, its own temp folder, watched for orphans."""
    import ray

    global _started
    temp_dir = Path(tempfile.mkdtemp(prefix="somna-ray-"))
    watchdog = subprocess.Popen(
        [sys.executable, "-m", "somna.platform.local_ray", str(os.getpid()), str(temp_dir)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C meant for the driver must not stop its watchdog
    )
    _started = _EmbeddedCluster(temp_dir, watchdog)
    try:
        with _environment({LOCAL_ONLY_ENV: "0"}), _local_only_mode():
            ray.init(
                address="local", num_cpus=num_cpus, include_dashboard=dashboard, dashboard_host=dashboard_host,
                log_to_driver=log_to_driver, _temp_dir=str(temp_dir),
            )
    except BaseException:
        shutdown()
        raise


def shutdown() -> None:
    """Leave Ray; an embedded Ray this process started is stopped, its processes awaited, its watchdog and folder removed."""
    import ray

    global _started
    if _started is None:
        ray.shutdown()
        return
    ray.shutdown(wait_for_processes=True)
    _started.watchdog.terminate()
    _started.watchdog.wait()
    shutil.rmtree(_started.temp_dir, ignore_errors=True)
    _started = None


@contextlib.contextmanager
def _environment(variables: dict[str, str]) -> Iterator[None]:
    """Set environment variables while Ray spawns its processes (they inherit them); restore them after."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _local_only_mode() -> Iterator[None]:
    """Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, into ray_constants, when ray is first imported, and this
    process may have imported it before: set the flag read from it too, while ray.init picks the node IP."""
    from ray._private import ray_constants

    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def _watch(driver_pid: int, temp_dir: Path) -> None:
    """Keep the driver's process tree in view; once the driver is gone, kill what is left of it and delete its temp folder.

    Ray's own fate sharing ends the GCS, the raylet and the workers within seconds of a SIGKILLed
    driver, but the dashboard and runtime-env agents then spend 60 s (a fixed timeout) reporting
    the raylet's death to the dead GCS, still listening. Orphans drop out of the driver's tree, so
    the tree is read while the driver lives. This process is the driver's child: the driver is gone
    when it is reparented (a clean `shutdown` terminates it first).
    """
    seen: dict[int, psutil.Process] = {}  # every process ever read in the tree: a reading can miss one under load
    while os.getppid() == driver_pid:
        with contextlib.suppress(psutil.Error):  # the driver died while its tree was read: keep what was seen
            seen |= {p.pid: p for p in psutil.Process(driver_pid).children(recursive=True) if p.pid != os.getpid()}
        time.sleep(WATCH_INTERVAL_S)
    for process in seen.values():
        with contextlib.suppress(psutil.Error):
            process.kill()  # psutil refuses a pid that another process has taken since (it compares creation times)
    shutil.rmtree(temp_dir, ignore_errors=True)


if __name__ == "__main__":
    _watch(int(sys.argv[1]), Path(sys.argv[2]))
