"""Where the learner lives: in this process (`inline`) or in a Ray actor with Ray evaluation tasks.

With `resources.sleep.workers` >= 1 the Ray executor runs each sleep as a Ray
Train job instead (platform/sleep_trainer.py) and loads its result into the actor.

Both executors run the same `LearnerHost` code, and evaluation always scores a
fresh learner rebuilt from the state dict, so the two produce identical numbers;
`inline` exists for debugging and to measure Ray's overhead.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from somna.learners.base import SleepContext, phase_seed
from somna.platform.builders import build_curriculum, build_learner, seed_everything

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
            self.ray.shutdown()


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
    """Start an embedded Ray or join `ray.address`; True if this call started Ray (and must stop it)."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": bool(cfg.ray.dashboard), "log_to_driver": True}
    if cfg.ray.dashboard:
        kwargs["dashboard_host"] = cfg.ray.dashboard_host
    if cfg.ray.address:
        _probe(cfg.ray.address, cfg.ray.connect_timeout_s)
        kwargs["address"] = cfg.ray.address
    else:
        kwargs["num_cpus"] = cfg.ray.num_cpus
    ray.init(**kwargs)
    return True


def _probe(address: str, timeout_s: float) -> None:
    """Fail fast on an unreachable host:port (ray.init itself retries for minutes)."""
    from somna.platform.config import ConfigError

    if address == "auto":
        return  # Ray answers at once when no local cluster is running
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"bad value for 'ray.address': expected auto, host:port or ray://host:port, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise ConfigError(f"cannot reach Ray at {address} within {timeout_s:g}s ({error})") from None


def make_executor(cfg: DictConfig, curriculum: Any) -> InlineExecutor | RayExecutor:
    return RayExecutor(cfg, curriculum) if cfg.executor == "ray" else InlineExecutor(cfg, curriculum)
