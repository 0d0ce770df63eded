"""`somna config SOURCE [key=value ...]`: the resolved config, every key with its help, as YAML you can run."""

from __future__ import annotations

import argparse

from omegaconf import DictConfig, OmegaConf

from somna.platform.config import RunConfig, load_config
from somna.platform.config_help import annotated_yaml, schema_help
from somna.platform.registry import CURRICULA, LEARNERS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "config", help="print the resolved config with each key's help (save it and edit it to make your own YAML)"
    )
    parser.add_argument("config", help="preset name, curriculum name or path to a YAML file")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, as for `somna run`")
    parser.set_defaults(func=_config)


def explained(cfg: DictConfig) -> str:
    """The config, its sleep stages' options filled in with their defaults, with every key's help."""
    from somna.learners.stages import build_sleep_stages

    curriculum_cls = CURRICULA.get(cfg.curriculum.name)
    learner_cls = LEARNERS.resolve(cfg.learner.name, curriculum_cls.modality)
    help_by_key = schema_help(RunConfig) | schema_help(curriculum_cls.Config, "curriculum.") | schema_help(learner_cls.Config, "learner.")
    shown = cfg.copy()
    for name, stage in build_sleep_stages(cfg.learner.sleep, curriculum_cls.modality).items():
        shown.learner.sleep.options[name] = OmegaConf.structured(stage.options)
        help_by_key |= schema_help(type(stage.options), f"learner.sleep.options.{name}.")
    return annotated_yaml(shown, help_by_key)


def _config(args: argparse.Namespace) -> int:
    print(explained(load_config(args.config, args.overrides)), end="")
    return 0
