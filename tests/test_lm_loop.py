"""The whole wake -> sleep -> evaluate loop of the sleep learner on the micro preset, through the platform runner."""

from __future__ import annotations

import csv
import json

from somna.platform.config import load_config
from somna.platform.runner import run


def test_micro_preset_runs_end_to_end_and_repeats_exactly(tmp_path):
    cfg = load_config("fact-stream-micro", [])
    summary = run(cfg, tmp_path / "a")
    assert summary["learner"] == "sleep" and summary["num_experiences"] == 2
    with open(tmp_path / "a" / "accuracy_matrix.csv") as handle:
        assert [row[0] for row in csv.reader(handle)] == ["row", "init", "0", "1"]
    events = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    sleeps = [e for e in events if e["event"] == "sleep"]
    assert len(sleeps) == 2
    assert [e["metrics"]["expansion/block"] for e in sleeps] == [1.0, 1.0]  # two CMS blocks: block 1 receives
    assert {"knowledge-seeding/gkd_loss", "knowledge-seeding/imitation_reward"} <= set(sleeps[0]["metrics"])
    evals = [e for e in events if e["event"] == "eval"]
    assert all({"accuracy", "exact_match", "perplexity"} <= set(e["metrics"]) for e in evals)

    again = run(cfg, tmp_path / "b")
    assert again == summary
    assert (tmp_path / "a" / "accuracy_matrix.csv").read_text() == (tmp_path / "b" / "accuracy_matrix.csv").read_text()
