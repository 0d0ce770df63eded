"""Copy generated result tables into README.md between include markers.

    <!-- include: docs/baselines_seed0.md -->
    ...replaced by the file's content...
    <!-- end include -->

Every table in the README is written by a script or a `somna` command into
docs/; this keeps the README's copy identical to it (tests/test_readme.py checks).
Run: .venv/bin/python docs/scripts/sync_readme.py
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INCLUDE = re.compile(r"(<!-- include: (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- end include -->)", re.S)


def synced(readme: str) -> str:
    def replace(match: re.Match) -> str:
        content = (ROOT / match["path"]).read_text().strip() + "\n"
        return match.group(1) + content + match.group(4)

    return INCLUDE.sub(replace, readme)


def includes(readme: str) -> list[tuple[str, str]]:
    """(path, body) of every include block."""
    return [(m["path"], m["body"]) for m in INCLUDE.finditer(readme)]


if __name__ == "__main__":
    path = ROOT / "README.md"
    path.write_text(synced(path.read_text()))
