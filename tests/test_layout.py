"""The package layout holds: every package folder ships, no room shadows an installed module, rooms import one way."""

from __future__ import annotations

import ast
import importlib.machinery
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ("platform", "kernels", "learners", "curricula", "evals")
# rooms without __init__.py: namespace portions, so that `python` started at the root (or a Ray worker of a
# driver started there) imports the standard library's platform and Hugging Face's kernels, not these folders
NAMESPACE_ROOMS = ("platform", "kernels")
# room -> rooms it may import (the registry, platform/registry.py, imports nothing of somna and any room may use it)
ALLOWED = {
    "kernels": set(),
    "curricula": set(),
    "evals": set(),
    "learners": {"kernels"},
    "platform": {"kernels", "learners", "curricula", "evals"},
}


def package_folders() -> set[str]:
    folders = {"somna"}
    for init in ROOT.glob("*/**/__init__.py"):
        relative = init.parent.relative_to(ROOT)
        if relative.parts[0] in ROOMS:
            folders.add("somna." + ".".join(relative.parts))
    return folders | {f"somna.{room}" for room in NAMESPACE_ROOMS}


def test_every_package_folder_is_listed_for_installation():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert listed == package_folders()
    for room in NAMESPACE_ROOMS:
        assert not (ROOT / room / "__init__.py").exists(), f"{room}/__init__.py would shadow the installed {room!r}"


def installed_elsewhere(name: str) -> bool:
    """Whether `import name` finds a module outside this repository (standard library or site-packages)."""
    elsewhere = [entry for entry in sys.path if Path(entry or ".").resolve() != ROOT]
    return name in sys.builtin_module_names or importlib.machinery.PathFinder.find_spec(name, elsewhere) is not None


@pytest.mark.parametrize("room", ROOMS)
def test_no_room_with_an_init_shares_its_name_with_an_installed_module(room):
    # transformers >= 5.25 imports Hugging Face's `kernels`; with kernels/__init__.py every CLI process and Ray
    # worker started at the root imported this folder in its place and failed
    if installed_elsewhere(room):
        assert not (ROOT / room / "__init__.py").exists(), (
            f"{room}/ shares its name with an installed module; drop its __init__.py as platform/ and kernels/ do"
        )


def imported_rooms(path: Path) -> set[str]:
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        for name in names:
            parts = name.split(".")
            if parts[0] == "somna" and len(parts) > 1 and name != "somna.platform.registry":
                rooms.add(parts[1])
    return rooms


def test_rooms_import_one_way():
    for room in ROOMS:
        for path in (ROOT / room).rglob("*.py"):
            wrong = imported_rooms(path) - ALLOWED[room] - {room}
            assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"
