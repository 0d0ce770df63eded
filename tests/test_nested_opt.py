"""`nested-opt` sleep stage: meta-learning the wake memory's gates improves held-out recall.

Tests marked `learned` note their measured values (seed 0); they were the same under
ATEN_CPU_CAPABILITY=default, avx2 and avx512.
"""

from __future__ import annotations

import pytest
import torch

from somna.curricula.mqar import make_mqar
from somna.learners.base import SleepConfig
from somna.learners.nested_opt import NestedOptStage, RecallMemory
from somna.learners.stages import check_sleep_stages
from somna.learners.vector.finetune import FinetuneLearner
from somna.platform.registry import SLEEP_STAGES


def test_registered():
    assert SLEEP_STAGES.resolve("nested-opt", "vector") is NestedOptStage


@pytest.mark.learned
def test_one_sleep_cycle_improves_held_out_recall_and_changes_only_the_gates():
    memory = RecallMemory(vocab_size=128, embed_dim=32, seed=0)
    held_out = make_mqar(64, 32, vocab_size=128, seed=99)
    frozen = {k: v.clone() for k, v in memory.state_dict().items() if "proj" not in k or "q_proj" in k or "k_proj" in k}
    gates_before = [p.detach().clone() for p in memory.update_rule_parameters()]
    before = memory.recall(held_out.inputs, held_out.targets)
    train = make_mqar(16, 32, vocab_size=128, seed=1)
    memory.wake(train.inputs, train.targets)
    metrics = NestedOptStage.with_options(steps=10)(memory, None)
    after = memory.recall(held_out.inputs, held_out.targets)
    assert after > before + 0.1  # measured 0.538 -> 0.686
    assert metrics["loss_last"] < metrics["loss_first"]  # measured 2.040 -> 1.319
    assert all(not torch.equal(a, b) for a, b in zip(gates_before, memory.update_rule_parameters()))
    state = memory.state_dict()
    assert all(torch.equal(state[k], v) for k, v in frozen.items())


def test_unrolled_wake_loss_reaches_every_gate():
    memory = RecallMemory(vocab_size=64, embed_dim=16, seed=0)
    batch = make_mqar(4, 8, vocab_size=64, seed=0)
    memory.unrolled_wake_loss(batch.inputs, batch.targets).backward()
    grads = [p.grad for p in memory.update_rule_parameters()]
    assert len(grads) == 6 and all(g is not None and g.abs().sum() > 0 for g in grads)  # θ, η, α: weight + bias


def test_rehearsal_buffer_keeps_the_latest_sequences():
    memory = RecallMemory(vocab_size=64, embed_dim=16, buffer_size=5, seed=0)
    for seed in range(3):
        batch = make_mqar(3, 4, vocab_size=64, seed=seed)
        memory.wake(batch.inputs, batch.targets)
    assert torch.equal(memory.buffer_inputs[-3:], batch.inputs) and len(memory.buffer_inputs) == 5
    assert sum(len(b[0]) for b in memory.rehearsal(None, batch_size=2)) == 5


def test_empty_buffer_sleeps_without_steps():
    assert NestedOptStage()(RecallMemory(vocab_size=64, embed_dim=16), None) == {"steps": 0.0}


def test_bad_options_and_missing_contract():
    with pytest.raises(ValueError, match="nested-opt options"):
        NestedOptStage.with_options(steps=0)
    with pytest.raises(ValueError, match="update_rule_parameters"):
        check_sleep_stages(SleepConfig(stages=["nested-opt"]), FinetuneLearner)
