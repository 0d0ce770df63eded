"""Hope learner: a Hope-block stack on digit rows learns an experience, restores exactly, validates its config.

Tests marked `learned` note their measured values (seed 0); they were the same under
ATEN_CPU_CAPABILITY=default, avx2 and avx512.
"""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from somna.curricula.digits import SplitDigits
from somna.learners.base import SleepContext
from somna.learners.vector.hope import HopeClassifier, HopeConfig, HopeLearner
from somna.platform.registry import LEARNERS


def digits(scenario: str = "task") -> SplitDigits:
    return SplitDigits(OmegaConf.structured(SplitDigits.Config()), scenario=scenario, seed=0)


def learner_for(stream: SplitDigits, **overrides) -> HopeLearner:
    return HopeLearner(OmegaConf.structured(HopeConfig(**overrides)), stream.info, seed=0)


def test_registered_for_vector_curricula():
    assert LEARNERS.resolve("hope", "vector") is HopeLearner


@pytest.mark.learned
def test_learns_an_experience_with_test_time_memories():
    stream = digits()
    learner = learner_for(stream, epochs=2)
    before = learner.evaluate(stream[0])["accuracy"]
    learner.wake(stream[0])
    learner.sleep(SleepContext(experience=stream[0], num_experiences=5, seed=0))
    assert learner.evaluate(stream[0])["accuracy"] > max(0.9, before)  # measured 0.495 -> 0.982


def test_each_digit_is_read_as_a_sequence_of_rows_by_hope_blocks():
    stream = digits()
    model = learner_for(stream, depth=2).model
    assert isinstance(model, HopeClassifier) and len(model.blocks) == 2
    assert type(model.blocks[0]).__name__ == "HopeBlock" and model.position.shape == (8, 32)
    assert model(torch.rand(3, 64)).shape == (3, 10)


def test_the_memories_learn_at_test_time():
    """The same rows in a different order give a different output: the blocks carry state along the sequence."""
    model = learner_for(digits()).model
    x = torch.rand(1, 64)
    flipped = x.reshape(1, 8, 8).flip(1).reshape(1, 64)
    with torch.no_grad():
        model.position.zero_()  # no position signal: only the memories see the order
        assert not torch.allclose(model(x), model(flipped))


def test_state_dict_restores_exactly():
    stream = digits()
    learner = learner_for(stream, epochs=1)
    learner.wake(stream[0])
    state = learner.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    restored = learner_for(stream, epochs=1)
    restored.load_state_dict(state)
    batch = stream[0].test.with_format("torch")[:]
    assert torch.equal(restored.predict(batch, task_id=0), learner.predict(batch, task_id=0))


def test_bad_patch_size_is_a_value_error():
    with pytest.raises(ValueError, match="learner.patch_size"):
        learner_for(digits(), patch_size=7)


def test_hosts_the_nested_opt_stage_changing_only_the_update_rule():
    stream = digits()
    config = HopeConfig(epochs=1)
    config.sleep.stages = ["nested-opt"]
    config.sleep.options = {"nested-opt": {"steps": 3}}
    learner = HopeLearner(OmegaConf.structured(config), stream.info, seed=0)
    rule = {id(p) for p in learner.update_rule_parameters()}
    # lr/decay readouts and biases, their 2-layer memories, their input projections, 3 CMS gates (w, b)
    assert len(rule) == 4 + 4 + 2 + 3 * 2
    learner.wake(stream[0])
    before = {name: p.detach().clone() for name, p in learner.model.named_parameters()}
    metrics = learner.sleep(SleepContext(experience=stream[0], num_experiences=5, seed=0))
    assert metrics["nested-opt/steps"] == 3.0
    for name, p in learner.model.named_parameters():
        assert torch.equal(before[name], p.detach()) != (id(p) in rule), name
