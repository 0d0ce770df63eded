"""Where the learner lives: in this process (`inline`) or in a Ray actor with Ray evaluation tasks.

With `resources.sleep.workers` >= 1 the Ray executor runs each sleep as a Ray
Train job instead (platform/sleep_trainer.py) and loads its result into the actor.

Both executors run the same `LearnerHost` code, and evaluation always scores a
fresh learner rebuilt from the state dict, so the two produce identical numbers;
`inline` exists for debugging and to measure Ray's overhead.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from somna.learners.base import SleepContext, phase_seed
from somna.platform import local_ray
from somna.platform.builders import build_curriculum, build_learner, seed_everything
from somna.platform.config import ConfigError, EnvironmentProblem, RayConfig

Metrics = dict[str, float]


def _node_id() -> str:
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except Exception:  # outside Ray there is no node
        pass
    return "local"


class LearnerHost:
    """Owns one learner and the curriculum it trains on, in whichever process it is placed."""

    def __init__(self, cfg: dict[str, Any], state: dict[str, torch.Tensor] | None = None):
        self.cfg = OmegaConf.create(cfg)
        torch.set_num_threads(int(self.cfg.resources.threads))
        self.curriculum = build_curriculum(self.cfg)
        self.learner = build_learner(self.cfg, self.curriculum.info)
        if state is not None:
            self.learner.load_state_dict(state)

    def wake(self, experience: int) -> tuple[Metrics, str]:
        seed_everything(phase_seed(int(self.cfg.seed), experience, "wake"))
        return self.learner.wake(self.curriculum[experience]), _node_id()

    def sleep(self, experience: int, artifacts_dir: str | None) -> Metrics:
        seed_everything(phase_seed(int(self.cfg.seed), experience, "sleep"))
        context = SleepContext(
            experience=self.curriculum[experience],
            num_experiences=len(self.curriculum),
            seed=int(self.cfg.seed),
            artifacts_dir=Path(artifacts_dir) if artifacts_dir else None,
        )
        return self.learner.sleep(context)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.learner.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Continue from a state computed elsewhere (a sleep that ran on Ray Train workers)."""
        self.learner.load_state_dict(state)


def evaluate_state(cfg: dict[str, Any], info: Any, state: dict[str, torch.Tensor], experience: Any) -> tuple[Metrics, str]:
    """Score a learner rebuilt from `state` on one experience (runs as a Ray task or inline)."""
    config = OmegaConf.create(cfg)
    torch.set_num_threads(int(config.resources.threads))
    with torch.random.fork_rng():
        seed_everything(phase_seed(int(config.seed), experience.index, "eval"))
        learner = build_learner(config, info)
        learner.load_state_dict(state)
        return learner.evaluate(experience), _node_id()


class InlineExecutor:
    """Everything in this process."""

    name = "inline"

    def __init__(self, cfg: DictConfig, curriculum: Any):
        self.cfg_dict = OmegaConf.to_container(cfg, resolve=True)
        self.curriculum = curriculum
        self.host: LearnerHost | None = None

    def start(self, state: dict[str, torch.Tensor] | None, name: str | None = None) -> None:
        with torch.random.fork_rng():
            self.host = LearnerHost(self.cfg_dict, state)

    def wake(self, experience: int) -> tuple[Metrics, str]:
        return self.host.wake(experience)

    def sleep(self, experience: int, artifacts_dir: str | None) -> Metrics:
        return self.host.sleep(experience, artifacts_dir)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.host.state_dict()

    def evaluate_all(self, state: dict[str, torch.Tensor]) -> list[tuple[Metrics, str]]:
        info = self.curriculum.info
        return [evaluate_state(self.cfg_dict, info, state, experience) for experience in self.curriculum]

    def close(self) -> None:
        self.host = None


class RayExecutor:
    """The learner in a Ray actor (restartable from a checkpoint); evaluation fans out as Ray tasks."""

    name = "ray"

    def __init__(self, cfg: DictConfig, curriculum: Any):
        import ray

        self.ray = ray
        self.cfg = cfg
        self.cfg_dict = OmegaConf.to_container(cfg, resolve=True)
        self.curriculum = curriculum
        self.started_ray = connect_ray(cfg)
        self.actor = None
        self._experience_refs = [ray.put(experience) for experience in curriculum]
        self._info_ref = ray.put(curriculum.info)
        self._evaluate = ray.remote(evaluate_state).options(**_ray_resources(cfg.resources.eval))
        self._warm_up = ray.remote(_node_id).options(**_ray_resources(cfg.resources.eval))

    def start(self, state: dict[str, torch.Tensor] | None, name: str | None = None) -> None:
        """(Re)create the learner actor from `state`; `name` lets tools find it with ray.get_actor."""
        if self.actor is not None:
            self.ray.kill(self.actor)
        actor_cls = self.ray.remote(LearnerHost).options(name=name, **_ray_resources(self.cfg.resources.wake))
        self.actor = actor_cls.remote(self.cfg_dict, state)
        self._warm_up.remote()  # an evaluation worker imports torch and somna while the actor does

    def wake(self, experience: int) -> tuple[Metrics, str]:
        return self.ray.get(self.actor.wake.remote(experience))

    def sleep(self, experience: int, artifacts_dir: str | None) -> Metrics:
        if self.cfg.resources.sleep.workers:
            from somna.platform.sleep_trainer import sleep_on_workers

            return sleep_on_workers(self.actor, self.cfg, experience, artifacts_dir)
        return self.ray.get(self.actor.sleep.remote(experience, artifacts_dir))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.ray.get(self.actor.state_dict.remote())

    def evaluate_all(self, state: dict[str, torch.Tensor]) -> list[tuple[Metrics, str]]:
        state_ref = self.ray.put(state)
        futures = [self._evaluate.remote(self.cfg_dict, self._info_ref, state_ref, ref) for ref in self._experience_refs]
        return self.ray.get(futures)

    def close(self) -> None:
        if self.actor is not None:
            self.ray.kill(self.actor)
            self.actor = None
        if self.started_ray:
            local_ray.shutdown()


def _ray_resources(spec: Any) -> dict[str, Any]:
    return {"num_cpus": spec.num_cpus, "num_gpus": spec.num_gpus, "resources": dict(spec.custom) or None}


def actor_died_errors() -> tuple[type[BaseException], ...]:
    """Exceptions meaning the learner's process died (not a bug in the learner)."""
    try:
        import ray.exceptions as rex
    except ImportError:
        return ()
    return tuple(
        getattr(rex, name) for name in ("RayActorError", "ActorDiedError", "ActorUnavailableError", "NodeDiedError")
        if hasattr(rex, name)
    )


def connect_ray(cfg: DictConfig) -> bool:
    """Join `ray.address` when it is set, else start a fresh embedded Ray; True if this call connected (and must leave)."""
    import ray

    if ray.is_initialized():
        return False
    if cfg.ray.address:
        join_cluster(cfg.ray.address, cfg.ray.connect_timeout_s)
    else:
        local_ray.start(cfg.ray.num_cpus, dashboard=bool(cfg.ray.dashboard), dashboard_host=cfg.ray.dashboard_host)
    return True


def join_cluster(address: str, timeout_s: float = RayConfig.connect_timeout_s) -> None:
    """Join a running cluster after checking that a Ray server answers there (ray.init would retry for minutes)."""
    import ray

    _probe(address, timeout_s)
    ray.init(address=address)


# what a gRPC client sends first: the HTTP/2 preface and an empty SETTINGS frame (length 0, type 4, flags 0, stream 0);
# a gRPC server answers with its own SETTINGS frame at once
GRPC_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
SETTINGS_FRAME_TYPE = 4


def _probe(address: str, timeout_s: float) -> None:
    """Fail fast, in one line, unless a gRPC server (Ray's GCS or its Ray Client port) answers at `address`."""
    target = _find_auto_cluster() if address == "auto" else address
    named = address if target == address else f"{address} ({target})"
    try:
        with socket.create_connection(_host_port(target), timeout=timeout_s) as connection:
            if _tls_enabled():
                return  # a TLS port answers a handshake, not a plain HTTP/2 preface; ray.init checks it
            connection.sendall(GRPC_PREFACE)
            reply = connection.recv(9)
    except OSError as error:
        raise EnvironmentProblem(f"cannot reach Ray at {named} within {timeout_s:g}s ({error})") from None
    if len(reply) < 4 or reply[3] != SETTINGS_FRAME_TYPE:
        raise EnvironmentProblem(f"{named} answers but is not a Ray cluster (no gRPC server there); check the host and port")


def _find_auto_cluster() -> str:
    """The host:port `ray.init(address="auto")` would join: RAY_ADDRESS, Ray's address file, or a running GCS.

    Quietly: Ray's warning about several clusters on this machine would be a second line of the
    error (and ray.init repeats it when the probe succeeds)."""
    from ray._private import services

    log = logging.getLogger(services.__name__)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        return services.canonicalize_bootstrap_address("auto")
    except ConnectionError as error:  # none found: Ray's message says how to name one
        raise EnvironmentProblem(f"ray.address=auto: {str(error).strip().splitlines()[0]}") from None
    finally:
        log.setLevel(level)


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"bad value for 'ray.address': expected auto, host:port or ray://host:port, got {address!r}")
    return host.strip("[]"), int(port)


def _tls_enabled() -> bool:
    return os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true")


def make_executor(cfg: DictConfig, curriculum: Any) -> InlineExecutor | RayExecutor:
    return RayExecutor(cfg, curriculum) if cfg.executor == "ray" else InlineExecutor(cfg, curriculum)
