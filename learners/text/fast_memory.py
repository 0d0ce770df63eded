"""The fast memory of the text sleep learner: what wake writes while every slow weight stays frozen.

PAPERS.md, "Language Models Need Sleep": knowledge enters fast (short-term) and is consolidated
into slow weights by sleep. Wake reads an experience's passages into a fast store that persists
over the whole experience; the sleep's teacher is the model *with* that store (it can answer
about the new passages), the student the model *without* it, and the sleep ends with the store
reset (synaptic pruning). `learner.fast_memory` picks the store:

  cms      the CMS's fastest level (level 0, its MLP): wake fine-tunes only that MLP on the
           passages (Adam, `learner.lr`, `learner.epochs`); the teacher answers from its weights,
           so distillation compares the teacher's and the student's next-token distributions
           on the same input (token-level GKD). Reset restores the MLP as it was before wake.
  context  the passages themselves, kept in context: wake changes no weight; the teacher reads
           the passage it is asked about (the `in-context` learner's prompt). Its knowledge is not
           in its prompt, so knowledge seeding distills its *samples* (sequence-level
           distillation: fine-tuning on teacher answers) instead of its distributions.
  kernel   the recurrent state of the base's memory-kernel mixers (a base pretrained with
           `model.short_term=NAME`, e.g. `world-deltanet`): wake reads the passages one after
           another with each mixer's state carried from one to the next (the kernel's own
           test-time update, e.g. the delta rule, PAPERS.md "DeltaNet"), and the teacher starts
           every sequence from the state the last passage left. It reads the student's prompt,
           so it is distilled token by token as well. Reset empties the state.

All three leave the core (embeddings, mixers, LM head), the slow CMS levels and every consolidated
expert bit-identical during wake.
"""

from __future__ import annotations

import abc
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch.utils._pytree import TreeSpec, tree_flatten, tree_unflatten

from somna.learners.text.encoding import with_passage
from somna.learners.text.learner import training_only
from somna.learners.text.model import KernelMixer, writing

if TYPE_CHECKING:
    from somna.learners.text.sleep import TextSleepLearner


class FastMemory(abc.ABC):
    """A fast store: written by wake, read by the sleep's teacher, reset when the sleep begins consolidating."""

    token_level: ClassVar[bool]  # the teacher reads the student's own prompt (its extra knowledge is in weights or state), so token-level distillation applies

    @abc.abstractmethod
    def write(self, learner: TextSleepLearner, texts: list[str], index: int) -> dict[str, float]:
        """Read the experience's documents into the store; returns wake metrics."""

    def bind(self, learner: TextSleepLearner) -> None:
        """Check that `learner`'s model can hold this store (a ValueError naming the key to change, raised when the
        learner is built)."""

    def reset(self, learner: TextSleepLearner) -> None:
        """Empty the store: the model computes what it computed before wake."""

    def teacher_prompt(self, prompt: str, passage: str) -> str:
        """The teacher's prompt for a question about `passage`: itself, or the passage first when it is in context."""
        return prompt

    def recall(self, passage: str, cue: str) -> str | None:
        """The store's own continuation of `cue` (the opening of `passage`) when it holds the passage verbatim;
        None: the teacher has to say it (sampled)."""
        return None

    def state(self) -> dict[str, torch.Tensor]:
        """What a learner rebuilt between wake and sleep (a Ray Train sleep worker) needs to reset the store."""
        return {}

    def load_state(self, learner: TextSleepLearner, state: dict[str, torch.Tensor]) -> None:
        """Restore `state` (keys as `state` wrote them) into `learner`."""


class CMSFastBlock(FastMemory):
    """CMS level 0's MLP, fine-tuned online on the passages; reset restores its pre-wake weights."""

    token_level = True
    PREFIX: ClassVar[str] = "fast.before_wake."

    def __init__(self) -> None:
        self.before_wake: dict[str, torch.Tensor] = {}

    @staticmethod
    def block(learner: TextSleepLearner) -> torch.nn.Module:
        return learner.cms[0].base

    def write(self, learner: TextSleepLearner, texts: list[str], index: int) -> dict[str, float]:
        block = self.block(learner)
        self.before_wake = {name: value.detach().clone() for name, value in block.state_dict().items()}
        optimizer = torch.optim.Adam(block.parameters(), lr=learner.config.lr)
        with training_only(learner.model, list(block.parameters())):
            return learner.read(texts, [(1, optimizer)], index)

    def reset(self, learner: TextSleepLearner) -> None:
        if self.before_wake:
            self.block(learner).load_state_dict(self.before_wake)
            self.before_wake = {}

    def state(self) -> dict[str, torch.Tensor]:
        return {self.PREFIX + name: value.clone() for name, value in self.before_wake.items()}

    def load_state(self, learner: TextSleepLearner, state: dict[str, torch.Tensor]) -> None:
        self.before_wake = {key.removeprefix(self.PREFIX): value.clone() for key, value in state.items() if key.startswith(self.PREFIX)}


class PassageContext(FastMemory):
    """The passages kept in context: nothing is written to the weights, the teacher reads the passage."""

    token_level = False

    def write(self, learner: TextSleepLearner, texts: list[str], index: int) -> dict[str, float]:
        return {"train_documents": float(len(texts)), "steps": 0.0}

    def teacher_prompt(self, prompt: str, passage: str) -> str:
        return with_passage(prompt, passage)

    def recall(self, passage: str, cue: str) -> str | None:
        return passage[len(cue) :].strip()


class KernelState(FastMemory):
    """The carried state of the base's memory-kernel mixers: wake chains the passages through it, reset empties it."""

    token_level = True
    PREFIX: ClassVar[str] = "fast.kernel."

    def __init__(self) -> None:
        self.mixers: list[KernelMixer] = []

    def bind(self, learner: TextSleepLearner) -> None:
        self.mixers = [module for module in learner.model.modules() if isinstance(module, KernelMixer)]
        if not self.mixers:
            raise ValueError(
                "learner.fast_memory=kernel needs a base whose mixers are memory kernels (pretrained with model.short_term=NAME, "
                "e.g. learner.model.base=world-deltanet); this base has none"
            )

    @torch.no_grad()
    def write(self, learner: TextSleepLearner, texts: list[str], index: int) -> dict[str, float]:
        with writing(self.mixers):
            for text in texts:  # in the experience's order, one document at a time: each starts from the last one's state
                batch = learner.encode_documents([text])
                learner.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])  # no labels: reading needs no loss
        return {"train_documents": float(len(texts)), "steps": 0.0}

    def reset(self, learner: TextSleepLearner) -> None:
        for mixer in self.mixers:
            mixer.memory = None

    def state(self) -> dict[str, torch.Tensor]:
        return {
            f"{self.PREFIX}{layer}.{leaf}": value.clone()
            for layer, mixer in enumerate(self.mixers)
            if mixer.memory is not None
            for leaf, value in enumerate(tree_flatten(mixer.memory)[0])
            if isinstance(value, torch.Tensor)
        }

    def load_state(self, learner: TextSleepLearner, state: dict[str, torch.Tensor]) -> None:
        for layer, mixer in enumerate(self.mixers):
            prefix = f"{self.PREFIX}{layer}."
            saved = {int(key.removeprefix(prefix)): value.clone() for key, value in state.items() if key.startswith(prefix)}
            mixer.memory = None
            if saved:
                leaves, spec = empty_state(mixer)  # the state's structure, and its non-tensor leaves (None)
                mixer.memory = tree_unflatten([saved.get(i, leaf) for i, leaf in enumerate(leaves)], spec)


def empty_state(mixer: KernelMixer) -> tuple[list[Any], TreeSpec]:
    """The leaves and structure of `mixer`'s state after one step from an empty one: what a saved state is rebuilt into."""
    with torch.no_grad():
        _, state = mixer.layer(torch.zeros(1, 1, mixer.dim), None)
    return tree_flatten(state)


class FastMemoryChoice(str, Enum):
    """`learner.fast_memory`: an Enum, so that the config loader refuses another value before anything is built."""

    cms = "cms"
    context = "context"
    kernel = "kernel"


FAST_MEMORIES: dict[FastMemoryChoice, type[FastMemory]] = {
    FastMemoryChoice.cms: CMSFastBlock,
    FastMemoryChoice.context: PassageContext,
    FastMemoryChoice.kernel: KernelState,
}


def build_fast_memory(choice: FastMemoryChoice | str) -> FastMemory:
    """The store `learner.fast_memory` names."""
    return FAST_MEMORIES[FastMemoryChoice(choice)]()

