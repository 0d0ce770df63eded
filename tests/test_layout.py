"""The package layout holds: every package folder ships, platform/ stays a namespace, rooms import one way."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ("platform", "kernels", "learners", "curricula", "evals")
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
    return folders | {"somna.platform"}


def test_every_package_folder_is_listed_for_installation():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert listed == package_folders()
    assert not (ROOT / "platform" / "__init__.py").exists()  # it would shadow the standard library's platform


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
