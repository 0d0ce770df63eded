"""Run configuration: OmegaConf structured configs, YAML presets, dotlist overrides.

The schema is in three parts: the run-wide `RunConfig` below, the chosen
curriculum's `Config` dataclass and the chosen learner's `Config` dataclass
(picked by `learner.name` and the curriculum's modality). Everything is
validated here, before Ray starts, so a typo is a one-line error and never a
traceback from a worker.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from somna.evals.rundir import yaml_problem
from somna.platform.catalog import load_builtins
from somna.platform.registry import CURRICULA, LEARNERS, UnknownNameError

PRESETS_DIR = Path(__file__).parent / "presets"  # shipped as package data
GROUPS = ("curriculum", "learner")
DEFAULT_LEARNER = "finetune"  # the learner of `somna run CURRICULUM` when no preset names one  # `learner=replay` selects a group; `learner.buffer=500` sets a field


class ConfigError(ValueError):
    """A problem with what the user gave (config, data, run directory), reported as one line (exit code 2)."""


class EnvironmentProblem(ConfigError):
    """A problem of the machine or network, not of the input (e.g. no Ray cluster at `--address`): one line, exit code 1.

    A ConfigError so that every caller that reports expected failures in one line reports this one too."""


@dataclass
class RayConfig:
    """Where Ray runs: an embedded local Ray (default) or a cluster you join."""

    address: str | None = None  # None: start an embedded local Ray; "auto" or "ray://host:port": join a cluster
    num_cpus: int | None = None  # CPUs of the embedded local Ray (None: all of this machine's)
    dashboard: bool = False  # start Ray's dashboard with the embedded Ray
    dashboard_host: str = "127.0.0.1"  # the interface the dashboard binds
    connect_timeout_s: float = 30.0  # how long to wait for an unreachable --address before failing
    # where Ray Train keeps the checkpoint of a sleep on workers (None: a temp dir on the driver's node,
    # fine on one machine; a multi-node cluster needs a path every node shares, or a URI such as s3://...)
    train_storage: str | None = None


@dataclass
class TaskResources:
    num_cpus: float = 1.0  # Ray CPUs reserved
    num_gpus: float = 0.0  # Ray GPUs reserved
    custom: dict[str, float] = field(default_factory=dict)  # Ray custom resources, e.g. {learner_node: 1}


@dataclass
class SleepResources(TaskResources):
    """Each Ray Train worker of a sleep; `workers` = 0 keeps the sleep in the learner actor."""

    workers: int = 0  # N >= 1 (executor=ray): every sleep is a data-parallel TorchTrainer run on N workers


@dataclass
class ResourcesConfig:
    """What each Ray process of a run reserves, and torch's thread count in it."""

    wake: TaskResources = field(default_factory=TaskResources)  # the actor that wakes (and sleeps, with no workers)
    eval: TaskResources = field(default_factory=TaskResources)  # each evaluation task
    sleep: SleepResources = field(default_factory=SleepResources)  # each sleep worker
    threads: int = 1  # torch threads per learner process; fixed so every executor computes the same floats


@dataclass
class LoggingConfig:
    """Progress output and optional mirrors of metrics.jsonl (the run directory stays the source of truth)."""

    progress: bool = True  # the progress bar on stderr
    tensorboard: bool = False  # also mirror every metrics event to <run dir>/tensorboard (needs tensorboard)
    mlflow: bool = False  # also mirror every metrics event to <run dir>/mlruns (needs mlflow installed)


@dataclass
class RunConfig:
    name: str | None = None  # run directory name (default: <curriculum>-<learner>-s<seed>)
    variant: str | None = None  # a label for this configuration in tables (`somna sweep --variants` sets it)
    storage_path: str = "runs"  # where run directories go: a path, or a URI (s3://, gs://, file://...)
    seed: int = 0  # every random draw of the run derives from it: same seed, same metrics
    scenario: str | None = None  # class | task | domain (default: the curriculum's)
    executor: str = "ray"  # ray | inline (same loop in this process, for debugging)
    max_actor_restarts: int = 3  # a dead learner actor is rebuilt from the last checkpoint this often
    curriculum: Any = None  # `name` + the curriculum's own options (`somna curricula`)
    learner: Any = None  # `name` + the learner's own options, including `sleep` (`somna learners`)
    ray: RayConfig = field(default_factory=RayConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


EXECUTORS = ("ray", "inline")
MAX_SEED = 2**32 - 1  # numpy and scikit-learn seeds are unsigned 32-bit
# a stream of T experiences is T x T evaluations (the accuracy matrix): past this it would never finish
MAX_EXPERIENCES = 1_000


def preset_names() -> list[str]:
    return sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))


def parse_yaml(text: str, source: str | Path) -> Any:
    """YAML text from `source` (named in the error with the line and column), or a one-line ConfigError."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{source} is not valid YAML ({yaml_problem(error)})") from None


def _read_source(source: str) -> dict[str, Any]:
    """The raw mapping of a preset name, a registered curriculum's name or a YAML file path.

    A curriculum with no preset runs with its own defaults and the `finetune` learner."""
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.exists() or "/" in source:
        if not path.is_file():
            raise ConfigError(f"config file not found: {source}")
        text = path.read_text()
    elif source in preset_names():
        text = (PRESETS_DIR / f"{source}.yaml").read_text()
    elif source in CURRICULA:
        return {"curriculum": {"name": source}, "learner": {"name": DEFAULT_LEARNER}}
    else:
        raise ConfigError(
            f"unknown preset or curriculum {source!r}; presets: {', '.join(preset_names())}; "
            f"curricula: {', '.join(CURRICULA.names())} (or a YAML file path)"
        )
    data = parse_yaml(text, source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a YAML mapping of config keys, got {type(data).__name__}")
    return data


def _parse_overrides(overrides: list[str]) -> tuple[dict[str, str], dict[str, Any]]:
    """Split `key=value` items into group selections (`learner=replay`) and a nested dict of the rest."""
    groups: dict[str, str] = {}
    rest = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep and key in GROUPS:
            groups[key] = value
        else:
            rest.append(item)
    return groups, parse_dotlist(rest)


def parse_dotlist(overrides: list[str]) -> dict[str, Any]:
    """`key=value` items as a nested dict, or a one-line ConfigError naming the first bad one."""
    nested = OmegaConf.create()
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value")
        try:
            nested.merge_with_dotlist([item])  # one at a time (as OmegaConf.from_dotlist does), to name a bad one
        except OmegaConfBaseException as error:
            raise ConfigError(f"bad override {item!r}: {first_line(error)}") from None
        except yaml.YAMLError as error:  # a value OmegaConf hands to YAML, e.g. an unclosed list
            raise ConfigError(f"bad override {item!r}: {yaml_problem(error, position=False)}") from None
    return OmegaConf.to_container(nested)  # type: ignore[return-value]


def first_line(error: BaseException) -> str:
    """The first line of an error's message: libraries put the gist there and the details below."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _merge_strict(schema: Any, layers: list[dict[str, Any]], where: str) -> DictConfig:
    """Merge dict layers onto a structured schema, turning OmegaConf errors into one-line ConfigErrors."""
    node = OmegaConf.structured(schema)
    for layer in layers:
        try:
            node = OmegaConf.merge(node, layer)
        except OmegaConfBaseException as error:
            raise ConfigError(_describe_merge_error(error, node, where)) from None
    return node


def _describe_merge_error(error: OmegaConfBaseException, node: DictConfig, where: str) -> str:
    full_key = getattr(error, "full_key", None) or getattr(error, "key", None) or ""
    key = f"{where}.{full_key}" if where and full_key else (full_key or where)
    if type(error).__name__ == "ConfigKeyError":
        parent = OmegaConf.select(node, ".".join(str(full_key).split(".")[:-1])) if "." in str(full_key) else node
        valid = ", ".join(sorted(parent.keys())) if isinstance(parent, DictConfig) else ""
        return f"unknown key {key!r}; valid keys here: {valid}"
    message = first_line(error).removesuffix(".")
    return f"bad value for {key!r}: {message}"


def load_config(source: str, overrides: list[str] | None = None) -> DictConfig:
    """Resolve a preset name, curriculum name or YAML path plus `key=value` overrides into a validated run config."""
    load_builtins()
    preset = _read_source(source)
    groups, user = _parse_overrides(list(overrides or []))

    curriculum_cls, curriculum_node = _resolve_group(
        "curriculum", groups, preset, user, lambda name: CURRICULA.get(name)
    )
    learner_cls, learner_node = _resolve_group(
        "learner", groups, preset, user, lambda name: LEARNERS.resolve(name, curriculum_cls.modality)
    )

    top_layers = [{k: v for k, v in layer.items() if k not in GROUPS} for layer in (preset, user)]
    cfg = _merge_strict(RunConfig, top_layers, "")
    cfg.curriculum = curriculum_node
    cfg.learner = learner_node
    _check_run_fields(cfg, curriculum_cls)
    _check_sleep_stages(cfg, learner_cls)
    _check_sleep_workers(cfg, learner_cls)
    _check_optimizer(cfg)
    return cfg


def _resolve_group(
    group: str, groups: dict[str, str], preset: dict[str, Any], user: dict[str, Any], lookup: Any
) -> tuple[type, DictConfig]:
    preset_node = preset.get(group) or {}
    user_node = user.get(group) or {}
    for where, node in ((f"preset {group}", preset_node), (f"override {group}", user_node)):
        if not isinstance(node, dict):
            raise ConfigError(f"{where} must be a mapping, got {node!r}; select one with {group}=NAME")
    name = groups.get(group) or user_node.get("name") or preset_node.get("name")
    if not name:
        raise ConfigError(f"no {group} given; set {group}=NAME")
    try:
        cls = lookup(name)
    except UnknownNameError as error:
        raise ConfigError(str(error)) from None
    schema_keys = set(OmegaConf.structured(cls.Config).keys())
    if preset_node.get("name", name) != name:
        # switching learner/curriculum keeps the preset's fields the new one also has, except its
        # sleep stages: those belong to the learner the preset was written for
        preset_node = {k: v for k, v in preset_node.items() if k in schema_keys and k != "sleep"}
    node = _merge_strict(cls.Config, [preset_node, user_node, {"name": name}], group)
    return cls, node


def _check_run_fields(cfg: DictConfig, curriculum_cls: type) -> None:
    if cfg.scenario is None:
        cfg.scenario = curriculum_cls.default_scenario
    if cfg.scenario not in curriculum_cls.scenarios:
        raise ConfigError(
            f"bad value for 'scenario': {cfg.curriculum.name} supports {', '.join(curriculum_cls.scenarios)}, "
            f"got {cfg.scenario!r}"
        )
    if cfg.executor not in EXECUTORS:
        raise ConfigError(f"bad value for 'executor': choose one of {', '.join(EXECUTORS)}, got {cfg.executor!r}")
    for key in ("resources.wake.num_cpus", "resources.eval.num_cpus", "resources.sleep.num_cpus", "resources.threads"):
        if OmegaConf.select(cfg, key) <= 0:
            raise ConfigError(f"bad value for {key!r}: must be > 0, got {OmegaConf.select(cfg, key)}")
    if cfg.ray.num_cpus is not None and cfg.ray.num_cpus < 1:
        raise ConfigError(f"bad value for 'ray.num_cpus': must be >= 1, got {cfg.ray.num_cpus}")
    if cfg.max_actor_restarts < 0:
        raise ConfigError(f"bad value for 'max_actor_restarts': must be >= 0, got {cfg.max_actor_restarts}")
    if cfg.executor == "ray" and not cfg.ray.address:
        _check_embedded_ray(cfg)
    if not 0 <= cfg.seed <= MAX_SEED:
        raise ConfigError(f"bad value for 'seed': must be between 0 and {MAX_SEED}, got {cfg.seed}")
    if cfg.curriculum.num_experiences > MAX_EXPERIENCES:
        raise ConfigError(
            f"bad value for 'curriculum.num_experiences': at most {MAX_EXPERIENCES} (every experience is evaluated "
            f"after every other: T x T evaluations), got {cfg.curriculum.num_experiences}"
        )
    _check_numbers(OmegaConf.to_container(cfg, resolve=True), "")


def _check_embedded_ray(cfg: DictConfig) -> None:
    """The embedded Ray can hold the learner actor next to an evaluation task (else the run waits forever),
    and it serves on loopback only (platform/local_ray.py)."""
    resources = cfg.resources
    needed = resources.wake.num_cpus + max(resources.eval.num_cpus, resources.sleep.workers * resources.sleep.num_cpus)
    if cfg.ray.num_cpus is not None and cfg.ray.num_cpus < needed:
        raise ConfigError(
            f"bad value for 'ray.num_cpus': the learner actor (resources.wake.num_cpus={resources.wake.num_cpus:g}) and an "
            f"evaluation task or the sleep workers need {needed:g} CPUs at once, got {cfg.ray.num_cpus}"
        )
    if cfg.ray.dashboard and cfg.ray.dashboard_host not in ("127.0.0.1", "localhost"):
        raise ConfigError(
            f"bad value for 'ray.dashboard_host': the embedded Ray serves on 127.0.0.1 only, got {cfg.ray.dashboard_host!r}; "
            "to serve the dashboard elsewhere, start a cluster (`ray start --head --dashboard-host ...`) and join it with --address"
        )


def _check_numbers(node: Any, key: str) -> None:
    """Every float in the config is finite, and every learning rate (`lr`, `*_lr`) is positive."""
    if isinstance(node, dict):
        for name, value in node.items():
            _check_numbers(value, f"{key}.{name}" if key else str(name))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _check_numbers(value, f"{key}[{index}]")
    elif isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"bad value for {key!r}: must be a finite number, got {node}")
    elif _is_learning_rate(key) and isinstance(node, (int, float)) and node <= 0:
        raise ConfigError(f"bad value for {key!r}: a learning rate must be > 0, got {node}")


def _is_learning_rate(key: str) -> bool:
    name = key.rpartition(".")[2]
    return name == "lr" or name.endswith("_lr")


def _check_sleep_stages(cfg: DictConfig, learner_cls: type) -> None:
    """Each stage in learner.sleep.stages exists, its options parse (to finite numbers), and the learner has its hooks."""
    from somna.learners.stages import build_sleep_stages, check_sleep_stages

    try:
        check_sleep_stages(cfg.learner.sleep, learner_cls)
    except UnknownNameError as error:
        raise ConfigError(f"learner.sleep.stages: {error}") from None
    except (ValueError, TypeError) as error:
        raise ConfigError(first_line(error)) from None
    for name, stage in build_sleep_stages(cfg.learner.sleep, learner_cls.modality).items():
        _check_numbers(dataclasses.asdict(stage.options), f"learner.sleep.options.{name}")


def _check_optimizer(cfg: DictConfig) -> None:
    """`learner.optimizer` (learners that build theirs at the first wake) names one of the shared optimizers."""
    from somna.learners.shared.optimizers import OPTIMIZERS

    name = cfg.learner.get("optimizer")
    if name is not None and name not in OPTIMIZERS:
        raise ConfigError(f"bad value for 'learner.optimizer': choose one of {', '.join(sorted(OPTIMIZERS))}, got {name!r}")


def _check_sleep_workers(cfg: DictConfig, learner_cls: type) -> None:
    """Sleep workers need Ray, and a learner that opted in (`data_parallel_sleep`, see learners/shared/distributed.py)."""
    workers = cfg.resources.sleep.workers
    if workers < 0:
        raise ConfigError(f"bad value for 'resources.sleep.workers': must be >= 0, got {workers}")
    if workers and cfg.executor != "ray":
        raise ConfigError(
            f"resources.sleep.workers={workers} needs executor=ray (Ray Train runs the sleep workers); "
            f"set resources.sleep.workers=0 for executor={cfg.executor}"
        )
    if workers and not getattr(learner_cls, "data_parallel_sleep", False):
        raise ConfigError(
            f"learner {cfg.learner.name!r} ({learner_cls.__name__}) cannot sleep on Ray Train workers: its sleep is not "
            f"data-parallel or needs wake state its state dict does not hold; set resources.sleep.workers=0"
        )


def run_name(cfg: DictConfig) -> str:
    return cfg.name or f"{cfg.curriculum.name}-{cfg.learner.name}-s{cfg.seed}"


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
