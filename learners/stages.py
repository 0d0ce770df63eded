"""The sleep-stage contract: a stage is an object with typed options that declares the learner hooks it uses.

`learner.sleep.stages=[expansion, knowledge-seeding, dreaming]` names registered
stages, run in that order; `learner.sleep.options.<stage>.<field>` sets the fields
of that stage's `Options` dataclass. Removing a name from the list is the ablation.
A stage name may have one implementation per modality (the same step of "Language
Models Need Sleep" done by a digit classifier and by a language model), picked by
the curriculum's modality like a learner; a stage registered without a modality
serves every learner that has its hooks.

Both halves of the contract are checked when the config is loaded, before Ray
starts (`check_sleep_stages`): every option against the stage's Options fields
and types, and every name in the stage's `hooks` against the learner class (a
method, property, class attribute or annotated instance attribute); a stage whose
options need another stage says so in `check_stages`. So a typo or a stage the
learner cannot run is a one-line error naming the valid choices.

The stage object does the work and holds its own machinery; the learner holds
its stages (`learner.sleep_stages`) and passes each one the sleep's context,
which its `begin_sleep` may extend with what its stages share.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from somna.platform.registry import SLEEP_STAGES

if TYPE_CHECKING:
    from somna.learners.base import Learner, Metrics, SleepConfig, SleepContext


@dataclass
class NoOptions:
    """This stage takes no options."""


class SleepStage(abc.ABC):
    """Base class of a registered stage: `@register_sleep_stage("name")` on a subclass.

    Options: the dataclass of its `learner.sleep.options.<name>` fields.
    hooks:   the learner attributes it uses; a learner without one cannot run it.
    """

    Options: ClassVar[type] = NoOptions
    hooks: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: Any = None):
        self.options = options if options is not None else self.Options()

    @classmethod
    def with_options(cls, **options: Any) -> SleepStage:
        """The stage built from keyword options, checked as a config's would be (e.g. in a notebook or a test)."""
        return cls(parse_options(cls.__name__, cls.Options, options))

    def check_stages(self, stages: list[str]) -> None:
        """A ValueError when these options need a stage that `stages` (the run's list) lacks; by default none."""

    def required_hooks(self) -> tuple[str, ...]:
        """The hooks these options use: `hooks`, plus any that an option turns on."""
        return type(self).hooks

    @abc.abstractmethod
    def __call__(self, learner: Learner, context: SleepContext) -> Metrics:
        """Run one sleep's share of this stage; return metrics (logged as `<stage>/<key>`)."""


def parse_options(stage: str, options_cls: type, given: Mapping[str, Any] | None) -> Any:
    """An `options_cls` instance from `learner.sleep.options.<stage>`; an unknown key or a bad type is a one-line ValueError."""
    where = f"learner.sleep.options.{stage}"
    valid = [f.name for f in fields(options_cls)]
    unknown = sorted(set(given or {}) - set(valid))
    if unknown:
        raise ValueError(f"{where}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(valid) or '(none)'}")
    try:
        node = OmegaConf.merge(OmegaConf.structured(options_cls), dict(given or {}))
        return OmegaConf.to_object(node)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or ""
        message = str(error).strip().splitlines()[0].removesuffix(".")
        raise ValueError(f"bad value for '{where}.{key}': {message}" if key else f"{where}: {message}") from None


def stage_class(name: str, modality: str) -> type[SleepStage]:
    return SLEEP_STAGES.resolve(name, modality)


def build_sleep_stages(config: SleepConfig, modality: str) -> dict[str, SleepStage]:
    """The stages named in `config.stages`, each built from its parsed options, in order."""
    options = dict(config.options or {})
    unknown = sorted(set(options) - set(config.stages))
    if unknown:
        raise ValueError(
            f"learner.sleep.options has options for stages not in learner.sleep.stages: {', '.join(unknown)}"
        )
    stages = {}
    for name in config.stages:
        cls = stage_class(name, modality)
        stages[name] = cls(parse_options(name, cls.Options, options.get(name)))
    return stages


def check_sleep_stages(config: SleepConfig, learner_cls: type) -> None:
    """Every stage exists for the learner's modality, its options parse, they find the stages they need, and the
    learner has its hooks."""
    stages = build_sleep_stages(config, learner_cls.modality)
    for name, stage in stages.items():
        stage.check_stages(list(stages))
        missing = [hook for hook in stage.required_hooks() if not declares(learner_cls, hook)]
        if missing:
            raise ValueError(
                f"sleep stage {name!r} needs learner.{', learner.'.join(missing)}, which {learner_cls.__name__} "
                f"does not have; remove {name!r} from learner.sleep.stages or pick a learner that can run it"
            )


def declares(cls: type, name: str) -> bool:
    """True if instances of `cls` have `name`: a class attribute or method, or an annotated instance attribute."""
    return hasattr(cls, name) or any(name in getattr(klass, "__annotations__", {}) for klass in cls.__mro__)
