"""Copy generated result tables into README.md between include markers.

    <!-- include: docs/baselines.md -->
    ...replaced by the file's content...
    <!-- end include -->

`docs/x.md#name` includes only the part of x.md between its own
`<!-- name:start -->` (or `:begin`) and `<!-- name:end -->` markers.

Every table in the README is written by a script or a `somna` command into
docs/; this keeps the README's copy identical to it (tests/test_readme.py checks).
Run: .venv/bin/python docs/scripts/sync_readme.py
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INCLUDE = re.compile(r"(<!-- include: (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- end include -->)", re.S)


def content(reference: str) -> str:
    """The text an include reference stands for, stripped, with one trailing newline."""
    path, _, section = reference.partition("#")
    text = (ROOT / path).read_text()
    if section:
        found = re.search(rf"<!-- {re.escape(section)}:(?:start|begin) -->\n(.*?)<!-- {re.escape(section)}:end -->", text, re.S)
        if found is None:
            raise ValueError(f"{path} has no section {section!r}")
        text = found.group(1)
    return text.strip() + "\n"


def synced(readme: str) -> str:
    def replace(match: re.Match) -> str:
        return match.group(1) + content(match["path"]) + match.group(4)

    return INCLUDE.sub(replace, readme)


def includes(readme: str) -> list[tuple[str, str]]:
    """(path, body) of every include block."""
    return [(m["path"], m["body"]) for m in INCLUDE.finditer(readme)]


if __name__ == "__main__":
    path = ROOT / "README.md"
    path.write_text(synced(path.read_text()))
