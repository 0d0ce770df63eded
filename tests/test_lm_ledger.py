"""The language-model tables' ledger (docs/scripts/lm_table.py): a run's outcome is found again by what decides
its floats, and only by that, so a fresh checkout pairs new rows with recorded ones instead of rerunning them."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs" / "scripts"))
import lm_table  # noqa: E402
from somna.platform.config import load_config  # noqa: E402


def test_a_run_key_names_the_seed_learner_and_kernel_set_but_not_how_the_run_is_executed(monkeypatch):
    key = lambda *overrides: lm_table.run_key(load_config("fact-stream-micro", ["learner=sleep", *overrides]))  # noqa: E731
    assert key("seed=0") == key("seed=0", "executor=inline", "logging.progress=false")
    assert key("seed=0") != key("seed=1")
    assert key("seed=0") != key("seed=0", "learner.teacher_experts=false")
    here = key("seed=0")
    monkeypatch.setattr(lm_table.torch.backends.cpu, "get_cpu_capability", lambda: "SOME_OTHER_SET")
    assert key("seed=0") != here


def test_a_key_added_since_keeps_old_runs_their_run_key_and_their_run_directory(tmp_path):
    """A config written before the keyed gate existed has none of its keys (learner.model.expert_keys, ...): at their old values a run
    keeps the key and the run directory it had; switched on, it is another run."""
    from omegaconf import OmegaConf

    cfg = load_config("fact-stream-micro", ["learner=sleep", "seed=0"])
    before = OmegaConf.to_container(cfg)
    for dotted in lm_table.ADDED_KEYS:  # every key added since, as a config written before any of them has none
        *path, name = dotted.split(".")
        holder = before
        for part in path:
            holder = holder[part]
        del holder[name]
    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(before))
    assert lm_table.run_key(OmegaConf.create(before)) == lm_table.run_key(cfg)
    assert lm_table.same_run_finished(tmp_path, cfg)
    keyed = load_config("fact-stream-micro", ["learner=sleep", "seed=0", "learner.model.expert_keys=64"])
    assert lm_table.run_key(keyed) != lm_table.run_key(cfg) and not lm_table.same_run_finished(tmp_path, keyed)


def test_the_ledger_gives_back_what_it_was_given_and_records_each_run_once(tmp_path):
    ledger = tmp_path / "lm_runs.jsonl"
    outcome = lm_table.Outcome(np.array([0.1, 0.0]), np.array([[0.9, 0.0], [0.7, 0.8]]), {"seed": 3, "skill_retention": float("nan")}, 12.5, {"teacher_dev_em": 0.96}, "abc")
    lm_table.add_to_ledger({("ablation", "sleep", 3): outcome}, ledger)
    lm_table.add_to_ledger({("ablation", "sleep", 3): outcome}, ledger)
    assert len(ledger.read_text().splitlines()) == 1
    entry = lm_table.read_ledger(ledger)["abc"]
    assert (entry["table"], entry["row"], entry["seed"]) == ("ablation", "sleep", 3)
    back = lm_table.Outcome.from_record("abc", entry)
    np.testing.assert_array_equal(back.R, outcome.R)
    np.testing.assert_array_equal(back.b, outcome.b)
    assert back.teacher == 0.96 and back.seconds == 12.5 and np.isnan(back.summary["skill_retention"])
    assert lm_table.fact_scores(back)[:3] == lm_table.fact_scores(outcome)[:3]


def test_paired_rows_list_only_the_pairs_that_ran_and_nothing_when_none_did():
    by_seed = {"sleep": {0: [0.5, 0.2], 1: [0.7, 0.4]}, "base": {0: [0.1, 0.1], 1: [0.3, 0.1]}}
    assert lm_table.paired_rows(by_seed, [("sleep", "finetune")], ("newest", "ACC")) == []
    lines = lm_table.paired_rows(by_seed, [("sleep", "base"), ("sleep", "finetune")], ("newest", "ACC"))
    assert lines[-1] == f"| sleep − base | {lm_table.fmt([0.4, 0.4])} | {lm_table.fmt([0.1, 0.3])} |"
    assert sum(line.startswith("| sleep −") for line in lines) == 1
