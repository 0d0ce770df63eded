"""A memory budget for building a learner: a size option too large for this machine is refused before it is allocated.

`learner.buffer=1000000000` or a 10⁹-wide layer would make torch try to allocate
hundreds of gigabytes and fail with a traceback (or the machine swap). Rather
than every learner estimating its own size, the check build of the learner runs
under `AllocationBudget`, which sees every tensor a factory op (empty, zeros,
full, randn, new_zeros...) is about to create, with its shape and dtype, and
refuses the one that would take the build past the memory this machine has
available, before a byte of it is allocated.
"""

from __future__ import annotations

from typing import Any

import psutil
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from somna.platform.config import ConfigError

GIGABYTE = 1024**3


class AllocationBudget(TorchDispatchMode):
    """Counts the bytes of the tensors created inside it; raises ConfigError before one would exceed `limit` bytes."""

    def __init__(self, limit: int, what: str):
        super().__init__()
        self.limit, self.what, self.allocated = limit, what, 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        size = _argument(func, args, kwargs, "size")
        if size is not None and str(kwargs.get("device") or "cpu") != "meta":
            self._charge([int(n) for n in size], kwargs.get("dtype") or torch.get_default_dtype())
        return func(*args, **kwargs)

    def _charge(self, shape: list[int], dtype: torch.dtype) -> None:
        elements = 1
        for n in shape:
            elements *= n
        self.allocated += elements * dtype.itemsize
        if self.allocated > self.limit:
            raise ConfigError(
                f"{self.what} needs {self.allocated / GIGABYTE:.1f} GiB of tensors (the last a {tuple(shape)} "
                f"{str(dtype).removeprefix('torch.')}), more than the {self.limit / GIGABYTE:.1f} GiB of memory available; "
                f"lower its size options (`somna config` lists them)"
            )


def _argument(func: Any, args: tuple, kwargs: dict, name: str) -> Any:
    """The value of the op's argument `name`, positional or keyword; None if the op has no such argument."""
    for position, argument in enumerate(func._schema.arguments):
        if argument.name == name:
            return args[position] if position < len(args) else kwargs.get(name)
    return None


def available_memory() -> int:
    """Bytes of memory this machine can give a new allocation now (free plus reclaimable cache)."""
    return int(psutil.virtual_memory().available)
