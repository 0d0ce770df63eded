"""Name -> object registries for learners, curricula, kernels and sleep stages.

Every room registers its public pieces here by name so that a config can pick
them with a string, and third-party packages add their own through entry
points without touching somna. This module imports nothing of somna, which is
what lets every room depend on it without creating import cycles.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class UnknownNameError(KeyError):
    """A name that no registry entry answers to; the message lists the valid ones."""

    def __init__(self, kind: str, name: str, choices: list[str], message: str | None = None):
        self.kind, self.name, self.choices = kind, name, choices
        super().__init__(message or f"unknown {kind} {name!r}; choose one of: {', '.join(choices)}")

    def __str__(self) -> str:  # KeyError would quote the whole message
        return self.args[0]


class Registry:
    """A named collection of classes or functions, filled by a decorator and by plugins.

    Plugins are entry points in `group`; each is loaded on first lookup. An
    entry point that points at a module registers itself through the decorator
    on import; one that points at an object is registered under the entry
    point's name. A plugin that fails to import is reported by name and the
    others still load.
    """

    def __init__(self, kind: str, group: str):
        self.kind = kind
        self.group = group
        self._entries: dict[str, Any] = {}
        self._descriptions: dict[str, str] = {}
        self._plugins_loaded = False
        self._deferred: dict[str, list[str]] = {}  # name -> modules that register it when imported
        self.plugin_errors: dict[str, str] = {}

    def defer(self, module: str, *names: str) -> None:
        """Promise that importing `module` registers `names`; it is imported on first lookup.

        For built-ins with heavy dependencies (the text learners import
        transformers, TRL and PEFT): a digits run, and each of its Ray workers,
        then never pays seconds of imports it does not use.
        """
        for name in names:
            self._deferred.setdefault(name, []).append(module)

    def _import_deferred(self, name: str | None = None) -> None:
        names = list(self._deferred) if name is None else [name]
        for key in names:
            for module in self._deferred.pop(key, []):
                importlib.import_module(module)

    def register(self, name: str, *, description: str | None = None) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            self.add(name, obj, description=description)
            return obj

        return decorator

    def add(self, name: str, obj: Any, *, description: str | None = None) -> None:
        existing = self._entries.get(name)
        if existing is not None and existing is not obj:
            raise ValueError(f"{self.kind} {name!r} is already registered by {_qualname(existing)}")
        self._entries[name] = obj
        self._descriptions[name] = description or first_doc_line(obj)

    def get(self, name: str) -> Any:
        self._load_plugins()
        if name not in self._entries:
            self._import_deferred(name)
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self.names()) from None

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._entries or name in self._deferred

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted({*self._entries, *self._deferred})

    def describe(self) -> dict[str, str]:
        """Name -> one-line description, sorted by name (imports everything deferred)."""
        self._import_deferred()
        return {name: self._descriptions[name] for name in self.names()}

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for entry_point in importlib.metadata.entry_points(group=self.group):
            try:
                loaded = entry_point.load()
            except Exception as error:  # a broken plugin must not take the others down
                message = f"{type(error).__name__}: {error}"
                self.plugin_errors[entry_point.name] = message
                warnings.warn(
                    f"somna plugin {entry_point.name!r} ({entry_point.value}) in group "
                    f"{self.group!r} failed to load: {message}",
                    stacklevel=2,
                )
                continue
            if entry_point.name not in self._entries and not _is_module(loaded):
                self.add(entry_point.name, loaded)


def _is_module(obj: Any) -> bool:
    return type(obj).__name__ == "module"


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def first_doc_line(obj: Any) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


ANY_MODALITY = "any"  # a variant that serves every modality (e.g. a sleep stage that only needs generic hooks)


class Variants(dict):
    """One name, implemented per input modality ("vector", "text", or "any"): modality -> object.

    `finetune` on digits and `finetune` on a text stream are different code with
    the same meaning; the curriculum's modality picks the implementation.
    """

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def for_modality(self, name: str, modality: str) -> Any:
        for key in (modality, ANY_MODALITY):
            if key in self:
                return self[key]
        raise UnknownNameError(
            self.kind,
            name,
            sorted(self),
            f"{self.kind} {name!r} has no implementation for {modality} curricula; it supports: {', '.join(sorted(self))}",
        )


class ModalityRegistry(Registry):
    """Names with one implementation per modality (learners, sleep stages); see Variants.

    `register(name, modality=...)` defaults to the object's own `modality` attribute,
    else to `default_modality`."""

    def __init__(self, kind: str, group: str, default_modality: str):
        super().__init__(kind, group)
        self.default_modality = default_modality

    def register(self, name: str, *, modality: str | None = None, description: str | None = None) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            self.add(name, obj, modality=modality, description=description)
            return obj

        return decorator

    def add(self, name: str, obj: Any, *, modality: str | None = None, description: str | None = None) -> None:
        modality = modality or getattr(obj, "modality", None) or self.default_modality
        variants = self._entries.setdefault(name, Variants(self.kind))
        if variants.get(modality, obj) is not obj:
            raise ValueError(f"{self.kind} {name!r} for {modality} is already registered by {_qualname(variants[modality])}")
        variants[modality] = obj
        self._descriptions.setdefault(name, description or first_doc_line(obj))

    def resolve(self, name: str, modality: str) -> Any:
        """The implementation of `name` for curricula of `modality` (or its modality-free one)."""
        variants = self.get(name)
        if modality not in variants:
            self._import_deferred(name)
        return variants.for_modality(name, modality)

    def modalities(self, name: str) -> list[str]:
        self._import_deferred(name)
        return sorted(self.get(name))


LEARNERS = ModalityRegistry("learner", "somna.learners", default_modality="vector")
CURRICULA = Registry("curriculum", "somna.curricula")
KERNELS = Registry("kernel", "somna.kernels")
SLEEP_STAGES = ModalityRegistry("sleep stage", "somna.sleep_stages", default_modality=ANY_MODALITY)

register_learner = LEARNERS.register
register_curriculum = CURRICULA.register
register_kernel = KERNELS.register
register_sleep_stage = SLEEP_STAGES.register
