"""Rerun one cheap row of every generated results table and compare it with the documented numbers.

A table script plugs in by defining `cheap_rows() -> list[Row]` and naming its
module in REPRODUCIBLE below. A Row says where the table is (the generated
docs/ file, whose README copy tests/test_readme.py keeps identical), which row
(a heading line above the table and the row's first cell), how to recompute
that row's markdown line with the script's own code, and the tolerance.

Cells are compared number by number (a cell "0.900 ± 0.053" holds two);
columns listed in `ignore` (wall times) are skipped. The tolerance depends on
where the check runs: on the machine facts the table's provenance line names
(the first `provenance_line()` after the row: CPU model, torch, ATen CPU
capability) the rerun must give the documented line exactly, because runs are
seeded and deterministic there; anywhere else every number may differ by the
row's stated `tolerance`, the spread measured across CPU kernel sets.

    .venv/bin/python docs/scripts/reproduce.py [--table baselines_table ...]

tests/test_reproduce.py runs every row (slow, and under each ATEN_CPU_CAPABILITY in .ci/run).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from somna.platform.provenance import provenance

SCRIPTS = Path(__file__).resolve().parent
REPRODUCIBLE = ("baselines_table", "sleep_vision_table", "nested_opt_table", "optimizer_table", "self_modification_table")
PROVENANCE = re.compile(r"Made at commit \S+ on (?P<cpu>.+?), torch (?P<torch>\S+), ATen CPU capability (?P<capability>\w+),")
NUMBER = re.compile(r"[-+−]?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Row:
    """One documented table row and how to recompute it."""

    doc: Path  # the generated file the README includes
    heading: str  # a line above the table (tells apart tables that share row labels)
    label: str  # the row's first cell, or its first cells joined by " | " where one does not identify it
    recompute: Callable[[], str]  # the row's markdown line, made by the table script's own code
    tolerance: float  # largest |documented - recomputed| per number away from the table's machine
    ignore: tuple[str, ...] = field(default=())  # column headers not compared (wall times)

    @property
    def name(self) -> str:
        return f"{self.doc.stem}/{self.label}"


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def documented(row: Row) -> tuple[list[str], list[str], dict[str, str] | None]:
    """(header cells, row cells, facts of the provenance line after the row) as the doc has them."""
    lines = row.doc.read_text().splitlines()
    start = lines.index(row.heading)
    width = row.label.count(" | ") + 1
    header: list[str] = []
    for index in range(start + 1, len(lines)):
        if lines[index].startswith("|---") or lines[index].startswith("|:--"):
            header = cells(lines[index - 1])
        elif lines[index].startswith("|") and header and " | ".join(cells(lines[index])[:width]) == row.label:
            after = (PROVENANCE.search(line) for line in lines[index + 1 :])
            return header, cells(lines[index]), next((m.groupdict() for m in after if m), None)
    raise ValueError(f"{row.doc} has no row {row.label!r} under {row.heading!r}")


def same_machine(facts: dict[str, str] | None) -> bool:
    """Whether this process computes the floats the table's machine did (MKL_CBWR other than AUTO picks another matmul)."""
    here = provenance()
    return (
        facts is not None and os.environ.get("MKL_CBWR", "AUTO") == "AUTO"
        and (facts["cpu"], facts["torch"], facts["capability"]) == (here["cpu"], here["torch"], here["aten_cpu_capability"])
    )


def differences(row: Row) -> list[str]:
    """What differs beyond the tolerance between the documented row and a rerun (empty: it reproduces)."""
    header, expected, facts = documented(row)
    actual = cells(row.recompute())
    tolerance = 0.0 if same_machine(facts) else row.tolerance
    found = []
    for column, want, got in zip(header, expected, actual, strict=True):
        if column in row.ignore:
            continue
        want_numbers, got_numbers = NUMBER.findall(want), NUMBER.findall(got)
        if len(want_numbers) != len(got_numbers) or any(
            abs(float(w.replace("−", "-")) - float(g.replace("−", "-"))) > tolerance + 1e-9 for w, g in zip(want_numbers, got_numbers)
        ):
            found.append(f"{column}: documented {want!r}, rerun {got!r} (tolerance {tolerance})")
    return found


def rows(tables: tuple[str, ...] = REPRODUCIBLE) -> list[Row]:
    """Every cheap row of the named table scripts (modules in docs/scripts with `cheap_rows()`)."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    return [row for table in tables for row in importlib.import_module(table).cheap_rows()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", nargs="+", default=list(REPRODUCIBLE), choices=REPRODUCIBLE)
    args = parser.parse_args()
    failed = False
    for row in rows(tuple(args.table)):
        found = differences(row)
        failed |= bool(found)
        print(("differs  " if found else "matches  ") + row.name, *found, sep="\n    ")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
