"""`somna bench overhead` (quick form): both executors give the same metrics, and the start-up breakdown is timed."""

from __future__ import annotations

import re

import pytest

from somna.platform import overhead_bench


@pytest.mark.slow
def test_quick_overhead_bench_compares_equal_runs_and_times_each_start_up_step():
    table = overhead_bench.run(quick=True)
    row = next(line for line in table.splitlines() if line.startswith("| demo"))
    assert row.rstrip().endswith("| yes |")  # the Ray and inline runs have identical summaries
    steps = re.findall(r"^\| ([a-z][^|]+) \| (\d+\.\d\d) \|$", table, flags=re.MULTILINE)
    assert [label.split()[0] for label, _ in steps] == ["start", "learner", "first", "next", "stop"]
    assert all(float(seconds) >= 0 for _, seconds in steps)
