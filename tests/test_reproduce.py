"""The README's numbers reproduce: one cheap row of every generated table, rerun, matches its documented line.

The rows come from the table scripts' `cheap_rows()` (registry and tolerances: docs/scripts/reproduce.py).
On the machine facts a table's provenance line names, the rerun must match exactly; under another
ATEN_CPU_CAPABILITY (.ci/run reruns learned tests under each) within the row's stated tolerance.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs" / "scripts"))
import reproduce  # noqa: E402


@pytest.mark.slow
@pytest.mark.learned
@pytest.mark.parametrize("row", reproduce.rows(), ids=lambda row: row.name)
def test_a_cheap_row_of_each_table_reproduces(row):
    assert not reproduce.differences(row)


def test_a_row_must_match_exactly_on_its_tables_machine_and_within_tolerance_elsewhere(tmp_path, monkeypatch):
    from somna.platform.provenance import provenance_line

    monkeypatch.delenv("MKL_CBWR", raising=False)  # MKL's own matmul path, as the tables were made with

    doc, header = tmp_path / "table.md", "| method | ACC | s |"

    def write(provenance: str) -> None:
        doc.write_text(f"{header}\n|---|---:|---:|\n| a | 0.500 ± 0.010 | 3 |\n| b | 0.900 | 3 |\n\n{provenance}\n")

    def differs(rerun: str) -> bool:
        return bool(reproduce.differences(reproduce.Row(doc, header, "a", lambda: rerun, 0.03, ignore=("s",))))

    write("Made at commit abc1234 on Some Other CPU (64 logical CPUs), torch 2.13.0+cpu, ATen CPU capability AVX2, 1 torch thread(s).")
    assert not differs("| a | 0.520 ± 0.012 | 9 |")  # another machine: within 0.03, wall time ignored
    assert differs("| a | 0.540 ± 0.010 | 3 |")
    write(provenance_line())
    assert differs("| a | 0.501 ± 0.010 | 3 |")  # the table's own machine: exact
    assert not differs("| a | 0.500 ± 0.010 | 7 |")
