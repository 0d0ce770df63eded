"""The scripts behind the docs' tables (docs/scripts/) still import: they share helpers with each other and
with somna, and no other test runs most of them (each takes hours), so a renamed helper would go unnoticed."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "docs" / "scripts"


@pytest.mark.parametrize("script", sorted(path.stem for path in SCRIPTS.glob("*.py")))
def test_every_docs_script_imports(script, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))  # as when it runs: its folder is on sys.path
    importlib.import_module(script)
