"""MQAR generator: layout, answers recoverable from the sequence, determinism, errors."""

from __future__ import annotations

import pytest
import torch

from somna.curricula.mqar import IGNORE_INDEX, make_mqar


def test_layout_and_answers_are_the_paired_values():
    batch = make_mqar(50, num_pairs=6, vocab_size=32, num_queries=4, seed=3)
    assert batch.inputs.shape == batch.targets.shape == (50, 2 * 6 + 4)
    assert batch.query_mask.sum(dim=1).tolist() == [4] * 50
    assert (batch.targets[:, :12] == IGNORE_INDEX).all()
    for inputs, targets in zip(batch.inputs.tolist(), batch.targets.tolist()):
        keys, values = inputs[0:12:2], inputs[1:12:2]
        assert len(set(keys)) == 6 and all(k < 16 for k in keys) and all(16 <= v < 32 for v in values)
        table = dict(zip(keys, values))
        for query, target in zip(inputs[12:], targets[12:]):
            assert target == table[query]


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = (make_mqar(8, 5, vocab_size=64, seed=s) for s in (1, 1, 2))
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.inputs, c.inputs)


def test_default_asks_every_key_once():
    batch = make_mqar(4, 7, vocab_size=64)
    for row in batch.inputs:
        assert sorted(row[14:].tolist()) == sorted(row[0:14:2].tolist())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_examples": 0, "num_pairs": 2}, "num_examples"),
        ({"num_examples": 2, "num_pairs": 17, "vocab_size": 32}, "num_pairs"),
        ({"num_examples": 2, "num_pairs": 3, "num_queries": 4}, "num_queries"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_mqar(**kwargs)


def test_recall_model_learns_to_recall_and_is_deterministic():
    from somna.platform.recall_bench import RecallSettings, recall_accuracy, train
    from somna.platform.registry import KERNELS

    settings = RecallSettings(loads=(3,), vocab_size=16, embed_dim=8, num_heads=1, steps=100, batch_size=16)
    held_out = make_mqar(200, 3, vocab_size=16, seed=99)
    first = recall_accuracy(train(KERNELS.get("deltanet"), settings), held_out)
    second = recall_accuracy(train(KERNELS.get("deltanet"), settings), held_out)
    assert first == second
    assert first > 0.4  # chance is 1/8


def test_contract_check_accepts_layers_and_names_what_fails():
    from somna.platform.recall_bench import FULL, contract_problem
    from somna.platform.registry import KERNELS

    assert contract_problem(KERNELS.get("gated-deltanet"), FULL) is None
    assert "TypeError" in contract_problem(torch.nn.Linear, FULL)

    class NoState(torch.nn.Module):
        def __init__(self, dim, num_heads=4):
            super().__init__()

        def forward(self, x, state=None):
            return x

    assert "must return" in contract_problem(NoState, FULL)


def test_recall_bench_dev_split_never_shares_a_sequence_with_the_held_out_one():
    from somna.platform.recall_bench import FULL, dev_sets, test_sets

    dev, held_out = dev_sets(FULL), test_sets(FULL)
    for load in FULL.loads:
        dev_rows = {tuple(row) for row in dev[load].inputs.tolist()}
        assert not dev_rows & {tuple(row) for row in held_out[load].inputs.tolist()}


def test_recall_table_prints_mean_ci_over_seeds_recipe_and_note():
    from somna.platform.provenance import provenance_line
    from somna.platform.recall_bench import FULL, _table

    scores = {load: [0.5, 0.6, 0.7] for load in FULL.loads}
    table = _table({"deltanet": (scores, 3.0, FULL)}, [], FULL, quick=False, origin=provenance_line())
    row = next(line for line in table.splitlines() if line.startswith("| deltanet"))
    assert "0.600 ± 0.248" in row and "0.01, 600 (default)" in row and "delta rule" in row
    assert "ATen CPU capability" in table and "Made at commit" in table
