"""A fixed-size reservoir of past examples, shared by `replay` and `der`.

Reservoir sampling (Vitter's algorithm R) keeps a uniform sample of every
example seen so far without knowing the stream's length: example number n
(0-based) fills slot n while the buffer has room, and afterwards replaces a
uniformly drawn slot j in [0, n] when j < capacity. Storage is pre-allocated,
so the buffer's state is a fixed set of tensors plus the count of examples
seen, and a learner rebuilt from `state_dict` continues the same sample.
"""

from __future__ import annotations

import torch


class ReservoirBuffer:
    """Uniform sample of up to `capacity` rows of named tensor columns (e.g. x, y, task, logits)."""

    def __init__(self, capacity: int, columns: dict[str, tuple[tuple[int, ...], torch.dtype]]):
        if capacity < 0:
            raise ValueError(f"buffer capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self.storage = {name: torch.zeros(capacity, *shape, dtype=dtype) for name, (shape, dtype) in columns.items()}
        self.seen = 0

    def __len__(self) -> int:
        return min(self.seen, self.capacity)

    def add(self, generator: torch.Generator, **rows: torch.Tensor) -> None:
        """Offer every row (in order) to the reservoir; `rows` has one tensor per column, same length."""
        if set(rows) != set(self.storage):
            raise ValueError(f"buffer rows need columns {sorted(self.storage)}, got {sorted(rows)}")
        count = len(next(iter(rows.values())))
        positions = torch.arange(self.seen, self.seen + count, dtype=torch.float64)
        # One uniform draw per example; slot j = floor(u * (n + 1)) is uniform on [0, n].
        draws = (torch.rand(count, generator=generator, dtype=torch.float64) * (positions + 1)).long()
        slots = torch.where(positions < self.capacity, positions.long(), draws)
        for row, slot in enumerate(slots.tolist()):
            if slot < self.capacity:
                for name, column in rows.items():
                    self.storage[name][slot] = column[row]
        self.seen += count

    def sample(self, size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Up to `size` distinct stored rows, drawn uniformly (empty columns when the buffer is empty)."""
        index = torch.randperm(len(self), generator=generator)[:size]
        return {name: column[index] for name, column in self.storage.items()}

    def state_dict(self, prefix: str) -> dict[str, torch.Tensor]:
        state = {f"{prefix}{name}": column.clone() for name, column in self.storage.items()}
        state[f"{prefix}seen"] = torch.tensor(self.seen, dtype=torch.int64)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor], prefix: str) -> None:
        for name, column in self.storage.items():
            stored = state[f"{prefix}{name}"]
            if stored.shape != column.shape:
                raise ValueError(f"buffer column {name!r} has shape {tuple(stored.shape)}, expected {tuple(column.shape)}")
            column.copy_(stored)
        self.seen = int(state[f"{prefix}seen"])
