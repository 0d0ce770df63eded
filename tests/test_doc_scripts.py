"""The scripts behind the docs' tables (docs/scripts/) still import: they share helpers with each other and
with somna, and no other test runs most of them (each takes hours), so a renamed helper would go unnoticed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "docs" / "scripts"

# In a process of its own: importing a script may register things (hope_forgetting.py registers its row's
# learners), which must not leak into the other tests' registries.
IMPORT_EACH = """
import importlib, sys
sys.path.insert(0, sys.argv[1])
for name in sys.argv[2:]:
    try:
        importlib.import_module(name)
    except Exception as error:
        print(f"{name}.py: {type(error).__name__}: {error}")
"""


def test_every_docs_script_imports():
    scripts = sorted(path.stem for path in SCRIPTS.glob("*.py"))
    assert "lm_table" in scripts and "router_reach" in scripts
    result = subprocess.run([sys.executable, "-c", IMPORT_EACH, str(SCRIPTS), *scripts], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "", f"docs/scripts that no longer import:\n{result.stdout}"
