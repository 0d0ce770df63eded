"""Data parallelism for a learner's training loops: one helper, a pass-through in a single process.

Under Ray Train (`resources.sleep.workers` >= 1) every worker runs the same
loop with the same seeds, so all ranks draw the same batches, dreams and noise;
each then computes the loss on its own contiguous shard of every batch and
accelerate's DDP averages the gradients (gloo: the learners' tensors live on
the CPU), which keeps the ranks' parameters identical. Outside torch.distributed
(the learner actor, the inline executor) nothing is wrapped and accelerate is
never imported, so a single process computes exactly the floats it always did.

A learner opts in to sleeping on workers with the class attribute
`data_parallel_sleep = True` (checked by the config): each worker rebuilds it
from its state dict, so its wake must leave nothing for sleep outside that
state, and its sleep loops must shard through this helper.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class DataParallel:
    """Shards batches across the ranks of an initialised process group and averages their gradients."""

    def __init__(self) -> None:
        self.accelerator = None
        self.rank, self.world_size = 0, 1
        if dist.is_available() and dist.is_initialized():
            from accelerate import Accelerator
            from accelerate.utils import DistributedDataParallelKwargs

            threads = torch.get_num_threads()
            # locked experts take no part in the forward pass, so DDP must not wait for their gradients
            ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
            self.accelerator = Accelerator(cpu=True, device_placement=False, kwargs_handlers=[ddp])
            torch.set_num_threads(threads)  # accelerate resets it when OMP_NUM_THREADS is unset; resources.threads rules
            self.rank, self.world_size = self.accelerator.process_index, self.accelerator.num_processes

    def prepare(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[nn.Module, torch.optim.Optimizer]:
        """The model to call for training steps (DDP-wrapped when distributed; it shares the parameters)."""
        if self.accelerator is None:
            return model, optimizer
        return self.accelerator.prepare(model, optimizer)

    def backward(self, loss: torch.Tensor) -> None:
        if self.accelerator is None:
            loss.backward()
        else:
            self.accelerator.backward(loss)

    def shard(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """This rank's contiguous slice (along dim 0) of tensors every rank holds in full."""
        if self.world_size == 1:
            return tensors
        return tuple(tensor.tensor_split(self.world_size)[self.rank] for tensor in tensors)

    def gather(self, shard: torch.Tensor, total: int) -> torch.Tensor:
        """The full tensor from every rank's `shard` of a `total`-row tensor, in the original row order."""
        if self.world_size == 1:
            return shard
        sizes = [len(part) for part in torch.arange(total).tensor_split(self.world_size)]
        padded = shard.new_zeros((sizes[0], *shard.shape[1:]))  # tensor_split puts the largest parts first
        padded[: len(shard)] = shard
        gathered = self.accelerator.gather(padded).split(sizes[0])
        return torch.cat([part[:size] for part, size in zip(gathered, sizes)])
