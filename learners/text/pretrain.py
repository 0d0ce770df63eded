"""Pretraining a causal LM on a stream of fresh documents, with accelerate: the loop behind `somna pretrain`.

Every step draws a new global batch of sequences from a seeded generator, each a chain of one or more
(prompt, completion) documents ("<s>prompt completion</s>" one after another, the completions and </s>
scored; an empty prompt makes a plain document, every token scored: learners/text/encoding.py) and takes one AdamW step (linear warm-up, cosine decay, gradient clipping). Under
`accelerate launch` each process draws the same global batch and trains on its own contiguous
slice of it, so one process, several processes and a GPU run the same loop unchanged; the losses
are averaged over processes. A progress bar shows the loss (main process only).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from somna.learners.text.encoding import encode_chains

Chains = Callable[[np.random.Generator, int], list[list[tuple[str, str]]]]  # (rng, how many) -> fresh sequences of (prompt, completion) documents


@dataclass
class PretrainOptions:
    """`somna pretrain`'s `train` keys."""

    steps: int = 2000  # optimizer steps, each on a fresh batch
    batch_size: int = 64  # sequences per step (over all processes)
    lr: float = 2e-3  # peak AdamW learning rate
    warmup: int = 100  # steps of linear warm-up, then cosine decay to 10% of lr
    weight_decay: float = 0.01
    clip: float = 1.0  # gradient-norm clipping
    max_length: int = 128  # tokens per sequence at most (truncated from the left)

    def __post_init__(self) -> None:
        if min(self.steps, self.batch_size, self.max_length) < 1 or self.lr <= 0 or self.warmup < 0:
            raise ValueError("train: steps, batch_size and max_length must be >= 1, lr > 0 and warmup >= 0")


@dataclass
class PretrainResult:
    losses: list[float] = field(default_factory=list)  # mean training loss of every step
    tokens: int = 0  # tokens trained on (padding excluded), all processes together
    seconds: float = 0.0  # wall-clock time of the loop
    cpu_seconds: float = 0.0  # CPU time of this process in the loop (on a shared machine, what the work cost)


def pretrain(model: torch.nn.Module, tokenizer: object, chains: Chains, options: PretrainOptions, seed: int, progress: bool = True) -> PretrainResult:
    """Train `model` in place on `options.steps` fresh batches from `chains`; returns the loss curve."""
    threads = torch.get_num_threads()
    accelerator = Accelerator()
    torch.set_num_threads(threads)  # accelerate may reset it; the caller's thread count rules
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    schedule = get_cosine_schedule_with_warmup(optimizer, options.warmup, options.steps, num_cycles=0.45)
    trained, optimizer, schedule = accelerator.prepare(model, optimizer, schedule)
    rng = np.random.default_rng(seed)
    result = PretrainResult()
    started, cpu_started = time.perf_counter(), time.process_time()
    bar = tqdm(range(options.steps), desc="pretraining", disable=not (progress and accelerator.is_main_process), dynamic_ncols=True)
    trained.train()
    for step in bar:
        batch = encode_chains(tokenizer, chains(rng, options.batch_size), options.max_length)
        result.tokens += int(batch["attention_mask"].sum())
        mine = {key: value.tensor_split(accelerator.num_processes)[accelerator.process_index].to(accelerator.device) for key, value in batch.items()}
        loss = trained(**mine).loss
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(trained.parameters(), options.clip)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        result.losses.append(float(accelerator.reduce(loss.detach(), reduction="mean")))
        if step % 20 == 0 or step == options.steps - 1:
            bar.set_postfix(loss=f"{result.losses[-1]:.3f}")
    trained.eval()
    result.seconds, result.cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    accelerator.unwrap_model(trained).eval()
    return result
