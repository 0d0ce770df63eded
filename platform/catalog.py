"""Imports every room once so that their built-in names are registered before lookups."""

from __future__ import annotations

import importlib

ROOMS = ("somna.curricula", "somna.kernels.catalog", "somna.learners")


def load_builtins() -> None:
    for room in ROOMS:
        importlib.import_module(room)
