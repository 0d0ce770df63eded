"""Multi-query associative recall (MQAR; Arora et al. 2023, "Zoology"): pure synthetic data.

Each sequence first lists `num_pairs` key-value pairs, then asks for the
values of `num_queries` of those keys:

    k_1 v_1 k_2 v_2 ... k_P v_P  q_1 q_2 ... q_Q      (every q_j is one of the k_i)

Keys come from the lower half of the vocabulary and values from the upper
half, keys within a sequence are distinct, and the target at each query
position is the value paired with that key (-100, PyTorch's ignore index,
everywhere else). A causal model must write the pairs into its memory while
reading them and recall them at the queries; the more pairs, the harder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE_INDEX = -100


@dataclass(frozen=True)
class MQARBatch:
    """`inputs` and `targets`: (num_examples, 2 * num_pairs + num_queries) int64 tensors."""

    inputs: torch.Tensor
    targets: torch.Tensor
    num_pairs: int

    @property
    def query_mask(self) -> torch.Tensor:
        return self.targets != IGNORE_INDEX


def make_mqar(
    num_examples: int,
    num_pairs: int,
    *,
    vocab_size: int = 256,
    num_queries: int | None = None,
    seed: int = 0,
) -> MQARBatch:
    """Generate `num_examples` MQAR sequences, deterministically from `seed`.

    `num_queries` defaults to `num_pairs` (every key is asked once, in random order).
    """
    num_keys = vocab_size // 2
    num_queries = num_pairs if num_queries is None else num_queries
    if num_examples < 1:
        raise ValueError(f"num_examples must be >= 1, got {num_examples}")
    if not 1 <= num_pairs <= num_keys:
        raise ValueError(f"num_pairs must be in 1..{num_keys} (half of vocab_size={vocab_size}), got {num_pairs}")
    if not 1 <= num_queries <= num_pairs:
        raise ValueError(f"num_queries must be in 1..num_pairs={num_pairs}, got {num_queries}")
    generator = torch.Generator().manual_seed(seed)
    keys = torch.rand(num_examples, num_keys, generator=generator).argsort(dim=1)[:, :num_pairs]  # distinct keys
    values = num_keys + torch.randint(0, vocab_size - num_keys, (num_examples, num_pairs), generator=generator)
    asked = torch.rand(num_examples, num_pairs, generator=generator).argsort(dim=1)[:, :num_queries]
    pairs = torch.stack([keys, values], dim=2).flatten(1)  # k_1 v_1 k_2 v_2 ...
    inputs = torch.cat([pairs, keys.gather(1, asked)], dim=1)
    targets = torch.full_like(inputs, IGNORE_INDEX)
    targets[:, 2 * num_pairs :] = values.gather(1, asked)
    return MQARBatch(inputs=inputs, targets=targets, num_pairs=num_pairs)
