"""Sleep on Ray Train workers (`resources.sleep.workers`): one worker reproduces the in-actor sleep
exactly, two workers stay in sync through DDP, and bad settings are one-line config errors."""

from __future__ import annotations

import pytest
from helpers import events_without_timing

from somna.platform.config import ConfigError, load_config
from somna.platform.rundir import RunDirectory
from somna.platform.runner import run
from somna.platform.sleep_trainer import state_digest

MICRO = ["executor=ray", "logging.progress=false", "curriculum.num_experiences=1"]


def _micro(*overrides: str):
    return load_config("split-digits-sleep-micro", [*MICRO, *overrides])


def _without_ray_train(events: list[dict]) -> list[dict]:
    for event in events:
        for key in [k for k in event.get("metrics", {}) if k.startswith("ray_train/")]:
            event["metrics"].pop(key)
    return events


@pytest.mark.slow
def test_one_worker_matches_the_sleep_in_the_actor(tmp_path, ray_session):
    in_actor = run(_micro(), tmp_path / "actor")
    on_worker = run(_micro("resources.sleep.workers=1"), tmp_path / "worker")
    assert on_worker == in_actor
    assert (tmp_path / "worker" / "accuracy_matrix.csv").read_text() == (tmp_path / "actor" / "accuracy_matrix.csv").read_text()
    events = events_without_timing(tmp_path / "worker")
    assert [e["metrics"]["ray_train/world_size"] for e in events if e["event"] == "sleep"] == [1.0]
    assert _without_ray_train(events) == events_without_timing(tmp_path / "actor")


@pytest.mark.slow
def test_two_workers_keep_identical_replicas(tmp_path, ray_session):
    # the learner actor holds one of the session's two CPUs; the two workers share the other
    run(_micro("resources.sleep.workers=2", "resources.sleep.num_cpus=0.5"), tmp_path / "run")
    (sleep,) = [e["metrics"] for e in events_without_timing(tmp_path / "run") if e["event"] == "sleep"]
    assert sleep["ray_train/world_size"] == 2.0
    # both ranks ended with the very state the run checkpointed, though each trained on its half of every batch
    saved = state_digest(RunDirectory(tmp_path / "run").load_checkpoint(0))
    assert sleep["ray_train/state_digest_rank0"] == sleep["ray_train/state_digest_rank1"] == saved
    assert not list(tmp_path.glob("**/sleep-0000-*")), "Ray Train's storage was not cleaned up"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["resources.sleep.workers=-1"], "bad value for 'resources.sleep.workers': must be >= 0, got -1"),
        (["resources.sleep.num_cpus=0"], "bad value for 'resources.sleep.num_cpus': must be > 0, got 0"),
        (["resources.sleep.workers=2", "executor=inline"], "resources.sleep.workers=2 needs executor=ray"),
        (["executor=ray", "resources.sleep.workers=1", "learner=finetune"], "learner 'finetune' (FinetuneLearner) cannot sleep on Ray"),
    ],
)
def test_bad_sleep_worker_settings_are_config_errors(overrides, message):
    with pytest.raises(ConfigError) as error:
        load_config("split-digits-sleep-micro", overrides)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.slow
def test_a_text_learner_with_a_written_fast_memory_sleeps_on_a_worker_exactly_as_in_the_actor(tmp_path, ray_session):
    # wake wrote CMS level 0: its pre-wake weights (what sleep resets it to) must travel to the worker in the state dict
    overrides = ["executor=ray", "logging.progress=false", "curriculum.num_experiences=1", "learner.fast_memory=cms", "learner.lr=0.01"]
    in_actor = run(load_config("fact-stream-micro", overrides), tmp_path / "actor")
    on_worker = run(load_config("fact-stream-micro", [*overrides, "resources.sleep.workers=1"]), tmp_path / "worker")
    assert on_worker == in_actor
    assert _without_ray_train(events_without_timing(tmp_path / "worker")) == events_without_timing(tmp_path / "actor")
