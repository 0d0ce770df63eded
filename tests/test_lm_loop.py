"""The whole wake -> sleep -> evaluate loop of the sleep learner on the micro preset, through the platform runner."""

from __future__ import annotations

import csv
import json

import pytest

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
    logged = {f"knowledge-seeding/{key}" for key in ("sequence_kd_loss", "kl_before", "kl_after", "teacher_dev_em", "student_dev_em_after")}
    assert logged <= set(sleeps[0]["metrics"])
    evals = [e for e in events if e["event"] == "eval"]
    assert all({"accuracy", "exact_match", "perplexity"} <= set(e["metrics"]) for e in evals)

    again = run(cfg, tmp_path / "b")
    assert again == summary
    assert (tmp_path / "a" / "accuracy_matrix.csv").read_text() == (tmp_path / "b" / "accuracy_matrix.csv").read_text()


@pytest.mark.learned
def test_sleep_forgets_less_than_finetuning_on_a_fixed_seed(tmp_path):
    """The paradigm end to end on world-micro: wake into the fast memory, sleep into new experts with the old
    protected, against fine-tuning every weight on the same passages."""
    stream = ["curriculum.entities_per_experience=4", "curriculum.facts_per_entity=3", "curriculum.test_questions=2"]
    sleep = run(load_config("fact-stream-micro", stream), tmp_path / "sleep")
    finetune = run(load_config("fact-stream-micro", [*stream, "learner=finetune", "learner.epochs=10", "learner.lr=0.003"]), tmp_path / "finetune")
    assert sleep["bwt"] > finetune["bwt"] + 0.05
    assert sleep["skill_retention"] > finetune["skill_retention"] + 0.2
