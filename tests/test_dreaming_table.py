"""docs/scripts/dreaming_table.py's stage table: a sleep's dev exact match through seeding and dreaming, from hand-built logs."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs" / "scripts"))

from dreaming_table import stage_means, stage_table  # noqa: E402


def sleep(teacher: float, before: float, seeded: float, dreamed: float | None = None) -> dict:
    metrics = {
        "knowledge-seeding/teacher_dev_em": teacher,
        "knowledge-seeding/student_dev_em_before": before,
        "knowledge-seeding/student_dev_em_after": seeded,
    }
    if dreamed is not None:
        metrics["dreaming/student_dev_em_after"] = dreamed
    return {"event": "sleep", "metrics": metrics}


def run(*sleeps: dict) -> SimpleNamespace:
    return SimpleNamespace(events=[{"event": "wake"}, *sleeps, {"event": "eval"}])


def test_stage_means_average_each_point_over_the_sleeps():
    assert stage_means(run(sleep(1.0, 0.0, 0.5, 0.75), sleep(0.8, 0.2, 0.3, 0.25))) == pytest.approx([0.9, 0.1, 0.4, 0.5])


def test_a_sleep_without_dreaming_ends_after_seeding():
    assert stage_means(run(sleep(1.0, 0.0, 0.5), sleep(0.8, 0.2, 0.3))) == pytest.approx([0.9, 0.1, 0.4, 0.4])


def test_rows_without_seeding_logs_have_no_stage_row():
    no_seeding = run({"event": "sleep", "metrics": {"dreaming/student_dev_em_after": 0.5}})
    assert stage_means(no_seeding) is None
    assert stage_means(run()) is None
    without_teacher = sleep(1.0, 0.0, 0.5, 0.75)
    del without_teacher["metrics"]["knowledge-seeding/teacher_dev_em"]
    assert stage_means(run(without_teacher)) is None  # no point of the sleep stands in for another but dreaming's
    runs = {"seal": [no_seeding], "sleep": [run(sleep(1.0, 0.0, 0.5, 0.75)), run(sleep(1.0, 0.0, 0.7, 0.75))]}
    lines = stage_table(runs, ["seal", "sleep"])
    rows = [line for line in lines if line.startswith("| sleep")]
    assert not any(line.startswith("| seal") for line in lines) and len(rows) == 1
    cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert cells[0] == "sleep" and cells[1].startswith("1.000") and cells[3].startswith("0.600") and cells[5].startswith("0.400")
