"""Shared machinery of the text learners: a base LM with a CMS, online wake with CMS update periods, probe evaluation.

The learner loads its base (`learner.model.base`, learners/text/bases.py) and turns the MLPs of
its last layers into the CMS levels with masked low-rank experts (learners/text/experts.py).
Wake reads the experience's documents (column `text`, see somna.curricula.text) as a stream of
next-token batches. Parameter groups update at their own periods (PAPERS.md, Nested Learning
eq. 71, "online consolidation"): the core (everything outside the CMS) every `core_period` steps
and CMS level l every C(l) steps, gradients summed in between. A gradient still pending at the
end of wake is the "computed, not yet applied" update that a sleep stage may consolidate around;
`sleep` applies whatever is left once its stages ran.

Evaluation decodes greedily from each probe's `prompt` and scores against `answer`: exact match,
chrF, and the perplexity of the answer given the prompt (learners/text/encoding.py); "accuracy"
is the curriculum's score (`experience.metadata["score"]`). The evaluation of the stream's last
experience also scores the base's own skills on its held-out probes (`skill/<name>`, exact
match; a somna base brings them, see bases.py), so every row of the accuracy matrix, and the
one before the stream, carries them once: the run's skill retention.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from somna.learners.base import Learner, LearnerConfig, Metrics, SleepContext
from somna.learners.text.bases import load_base
from somna.learners.text.encoding import answer_nll, encode_documents, greedy_answers, score_model, score_probes
from somna.learners.text.experts import ExpertMLP, attach_cms, cms_blocks

if TYPE_CHECKING:
    from somna.learners.text.seeding import SeedingData

SKILL_PREFIX = "skill/"


def dev_rows(experience: Any) -> list[dict[str, str]]:
    """The experience's dev split (question paraphrases no test probe uses), [] when it has none: all a sleep may score on."""
    return list(experience.dev) if getattr(experience, "dev", None) is not None else []


@contextmanager
def training_only(model: torch.nn.Module, parameters: list[torch.nn.Parameter]) -> Iterator[None]:
    """requires_grad on exactly `parameters` while active (TRL's trainers and every loop here optimise
    whatever requires grad, and frozen weights then get no gradients at all); the flags and eval mode after."""
    keep = {id(p) for p in parameters}
    before = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
    for parameter, _ in before:
        parameter.requires_grad_(id(parameter) in keep)
    try:
        yield
    finally:
        for parameter, flag in before:
            parameter.requires_grad_(flag)
        model.eval()


@dataclass
class LMModelConfig:
    # a `somna pretrain` output directory, a pretrain preset (pretrained once and cached; `somna pretrain --help`
    # lists them) or a Hugging Face causal LM (hub name or local directory)
    base: str = "world"
    cms_periods: list[int] = field(default_factory=lambda: [1, 4, 16])  # one CMS level per entry (its period C(l)), on the MLPs of the base's last layers
    num_experts: int = 4  # masked low-rank experts per CMS level
    expert_rank: int = 8  # rank r of each expert (down: d x r, up: r x d)
    expert_top_k: int = 0  # 0: every unlocked expert is used; k: only the k strongest gates per token
    expert_keys: int = 0  # keyed gate: each expert keeps up to this many keys, the inputs a sleep taught it on, and acts only near them (0: off, the router alone)
    key_threshold: float = 0.95  # the cosine similarity to one of its keys an input needs for a keyed expert to act on it
    key_window: int = 1  # a keyed gate's query sums the level's unit inputs over this many tokens, ending at the position


@dataclass
class TextLearnerConfig(LearnerConfig):
    model: LMModelConfig = field(default_factory=LMModelConfig)
    lr: float = 1e-3  # wake's Adam learning rate
    epochs: int = 1  # 1 = the online setting: every document is read once
    batch_size: int = 8  # documents per wake step
    max_length: int = 128  # tokens per sequence at most (truncated from the left)
    core_period: int = 1  # the core (everything outside the CMS) takes its summed update every this many steps
    eval_max_new_tokens: int = 16  # greedy answer length at most
    eval_batch_size: int = 64  # probes per evaluation batch
    skill_probes: int = 100  # held-out probes per skill of the base scored for skill retention (0: none)


@dataclass
class TextSleepContext(SleepContext):
    """A text learner's sleep: what its stages hand each other (expansion -> knowledge seeding -> dreaming)."""

    teacher: torch.nn.Module | None = None  # the model as woken, with its fast memory (frozen)
    slow: torch.nn.Module | None = None  # the model without its fast memory, before this sleep trained anything (frozen)
    new_expert: tuple[int, int] | None = None  # (CMS level, expert) that expansion unlocked
    protection: SeedingData | None = None  # the slow model's own pairs knowledge seeding guarded (a protected dreaming reuses them)


class TextLearner(Learner):
    """Next-token learning on text streams with a base LM and its CMS; subclasses change data or add sleep hooks."""

    Config = TextLearnerConfig
    modality = "text"
    model: Any  # the parts sleep stages use (their hooks)
    tokenizer: Any
    skills: dict[str, list[dict[str, str]]]
    # May sleep on Ray Train workers (learners/shared/distributed.py): the state dict carries wake's pending
    # update; TRL's trainers shard their batches through accelerate, dreaming shards its LoRA trials,
    # and the other sleep loops run replicated (same seeds, same floats on every rank).
    data_parallel_sleep = True

    def __init__(self, config: Any, info: Any, seed: int):
        super().__init__(config, info, seed)
        for name in ("epochs", "batch_size", "core_period"):
            if getattr(config, name) < 1:
                raise ValueError(f"learner.{name} must be >= 1, got {getattr(config, name)}")
        if config.skill_probes < 0:
            raise ValueError(f"learner.skill_probes must be >= 0, got {config.skill_probes}")
        periods = list(config.model.cms_periods)
        if not periods or any(period < 1 for period in periods):
            raise ValueError(f"learner.model.cms_periods must be a non-empty list of periods >= 1, got {periods}")
        spec = config.model
        if spec.num_experts < 0 or spec.expert_rank < 1:
            raise ValueError("learner.model.num_experts must be >= 0 and learner.model.expert_rank >= 1")
        if spec.expert_keys < 0 or not -1.0 <= spec.key_threshold <= 1.0:
            raise ValueError(
                f"learner.model.expert_keys must be >= 0 and learner.model.key_threshold a cosine similarity in [-1, 1], "
                f"got {spec.expert_keys} and {spec.key_threshold}"
            )
        if spec.key_window < 1:
            raise ValueError(f"learner.model.key_window must be >= 1 (tokens a keyed gate's query spans), got {spec.key_window}")
        base = load_base(spec.base)
        self.tokenizer = base.tokenizer
        self.skills = {name: rows[: config.skill_probes] for name, rows in base.skills.items() if config.skill_probes > 0}
        torch.manual_seed(seed)  # the experts' random down projections and router rows
        self.model = base.model
        attach_cms(self.model, len(periods), spec.num_experts, spec.expert_rank, spec.expert_top_k, spec.expert_keys, spec.key_threshold, spec.key_window)
        self.model.eval()
        self.step = torch.zeros((), dtype=torch.long)  # wake steps so far: fixes the phase of every period
        self._optimizers: list[tuple[int, torch.optim.Optimizer]] | None = None

    @property
    def cms(self) -> list[ExpertMLP]:
        """The CMS levels of the model, level 0 (the fastest) first."""
        return cms_blocks(self.model)

    # -- data -----------------------------------------------------------------------------
    def training_texts(self, experience: Any) -> list[str]:
        """Documents this wake reads; `replay` adds its buffer."""
        return list(experience.train["text"])

    def encode_documents(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """<s> text </s>, right-padded; labels are the ids with padding ignored."""
        return encode_documents(self.tokenizer, texts, self.config.max_length)

    # -- wake: online reading with CMS periods -----------------------------------------------
    def parameter_groups(self) -> list[tuple[int, list[torch.nn.Parameter]]]:
        """(update period, parameters): the core, then one group per CMS block."""
        blocks = [list(block.parameters()) for block in self.cms]
        in_blocks = {id(p) for block in blocks for p in block}
        core = [p for p in self.model.parameters() if id(p) not in in_blocks]
        return [(self.config.core_period, core)] + list(zip(self.config.model.cms_periods, blocks))

    def new_optimizers(self) -> list[tuple[int, torch.optim.Optimizer]]:
        """One Adam per parameter group, with the group's update period (fresh every wake)."""
        return [(period, torch.optim.Adam(params, lr=self.config.lr)) for period, params in self.parameter_groups()]

    def wake(self, experience: Any) -> Metrics:
        self.model.zero_grad(set_to_none=True)  # a sleep stage's last backward must not add to wake's first update
        self._optimizers = self.new_optimizers()
        return self.read(self.training_texts(experience), self._optimizers, experience.index)

    def read(self, texts: list[str], optimizers: list[tuple[int, torch.optim.Optimizer]], index: int) -> Metrics:
        """Online next-token learning on `texts` (`epochs` passes, shuffled by experience `index`): each
        optimizer steps its parameters every `period` batches, their gradients summed in between."""
        generator = self.generator(index)
        self.model.train()
        total, steps = 0.0, 0
        for _ in range(self.config.epochs):
            for batch_ids in torch.randperm(len(texts), generator=generator).split(self.config.batch_size):
                batch = self.encode_documents([texts[i] for i in batch_ids])
                loss = self.model(**batch).loss
                loss.backward()
                self.step += 1
                for period, optimizer in optimizers:
                    if int(self.step) % period == 0:  # block l takes its summed update every C(l) steps
                        optimizer.step()
                        optimizer.zero_grad()
                total, steps = total + loss.item(), steps + 1
        self.model.eval()
        return {"loss": total / max(steps, 1), "train_documents": float(len(texts)), "steps": float(steps)}

    def apply_pending_updates(self) -> None:
        """Apply every gradient still accumulating (the slow blocks' computed-but-unapplied update)."""
        if self._optimizers is None:
            return
        for _, optimizer in self._optimizers:
            optimizer.step()
            optimizer.zero_grad()
        self._optimizers = None

    def begin_sleep(self, context: SleepContext) -> TextSleepContext:
        return TextSleepContext(**vars(context))

    def end_sleep(self, context: SleepContext) -> None:
        """Whatever update the stages left pending lands now, so the next wake starts from it."""
        self.apply_pending_updates()

    def sleep_parameters(self, context: TextSleepContext) -> list[torch.nn.Parameter]:
        """What this learner's sleep stages may train: the whole model (the sleep learner narrows it)."""
        return list(self.model.parameters())

    def frozen_copy(self) -> torch.nn.Module:
        """The model as it is now, frozen: a sleep's teacher (LM_theta of the paper) or reference."""
        copy_ = copy.deepcopy(self.model).eval()
        for parameter in copy_.parameters():
            parameter.requires_grad_(False)
        return copy_

    # -- evaluation -------------------------------------------------------------------------
    def probe_prompt(self, row: dict[str, str]) -> str:
        """What the model sees at test time; `in-context` prepends the passage."""
        return row["prompt"]

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        """Greedy completions (up to </s>), the first line of each, stripped."""
        return greedy_answers(self.model, self.tokenizer, prompts, max_new_tokens)

    def score(self, rows: list[dict[str, str]], batch_size: int) -> dict[str, float]:
        """Exact match, chrF and answer perplexity on `rows` (their prompts as they are)."""
        return score_probes(
            rows,
            lambda prompts: self.generate(prompts, self.config.eval_max_new_tokens),
            lambda prompts, answers: answer_nll(self.model, self.tokenizer, prompts, answers, self.config.max_length),
            batch_size,
        )

    def dev_exact_match(self, experience: Any, model: torch.nn.Module | None = None, prompt_of: Callable[[dict[str, str]], str] | None = None) -> float | None:
        """Exact match of `model` (this learner's by default) on the experience's dev questions, asked as
        `prompt_of(row)` (closed-book by default): what a sleep may look at, never a test probe. None without a dev split."""
        rows = dev_rows(experience)
        if not rows:
            return None
        prompt_of = prompt_of or (lambda row: row["prompt"])
        probes = [{"prompt": prompt_of(row), "answer": row["answer"]} for row in rows]
        config = self.config
        return score_model(model or self.model, self.tokenizer, probes, batch_size=config.eval_batch_size, max_new_tokens=config.eval_max_new_tokens, max_length=config.max_length)["exact_match"]

    def evaluate(self, experience: Any, batch_size: int | None = None) -> Metrics:
        batch_size = batch_size or self.config.eval_batch_size
        rows = [{"prompt": self.probe_prompt(row), "answer": row["answer"]} for row in experience.test if row["prompt"]]
        scores = self.score(rows, batch_size)
        score = experience.metadata.get("score", "exact_match")
        if score not in ("exact_match", "chrf"):
            raise ValueError(f"experience.metadata['score'] must be exact_match or chrf, got {score!r}")
        if experience.index == self.info.num_experiences - 1:  # once per row of the accuracy matrix
            scores |= {f"{SKILL_PREFIX}{name}": self.score(probes, batch_size)["exact_match"] for name, probes in self.skills.items()}
        return {"accuracy": scores[score], **scores}

    def predict(self, batch: dict[str, Any], task_id: int | None = None) -> list[str]:
        """Greedy answers to `batch["prompt"]` (text learners predict strings, not label ids)."""
        return self.generate([self.probe_prompt({"prompt": p, "context": c}) for p, c in zip(batch["prompt"], batch["context"])], self.config.eval_max_new_tokens)

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {f"model.{k}": v.detach().clone() for k, v in self.model.state_dict().items()}
        state["step"] = self.step.clone()
        return state | self.pending_state()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
        self.step = state["step"].clone()
        self.load_pending_state(state)

    def pending_state(self) -> dict[str, torch.Tensor]:
        """Wake's update not yet applied: the summed gradients and each group's Adam moments.

        Empty once sleep has applied it (so checkpoints, written after sleep, never hold it);
        between wake and sleep it lets a learner rebuilt from the state dict (a Ray Train
        sleep worker) consolidate exactly the update the woken learner would have."""
        if self._optimizers is None:
            return {}
        names = {id(p): name for name, p in self.model.named_parameters()}
        state = {"pending.active": torch.ones(())}
        for _, optimizer in self._optimizers:
            for parameter in optimizer.param_groups[0]["params"]:
                name = names[id(parameter)]
                if parameter.grad is not None:
                    state[f"pending.grad.{name}"] = parameter.grad.detach().clone()
                state |= {f"pending.adam.{key}.{name}": value.clone() for key, value in optimizer.state.get(parameter, {}).items()}
        return state

    def load_pending_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore `pending_state` (or drop a stale one: loaded weights make old gradients meaningless)."""
        self.model.zero_grad(set_to_none=True)
        self._optimizers = None
        if "pending.active" not in state:
            return
        self._optimizers = self.new_optimizers()
        names = {id(p): name for name, p in self.model.named_parameters()}
        for _, optimizer in self._optimizers:
            for parameter in optimizer.param_groups[0]["params"]:
                name = names[id(parameter)]
                if f"pending.grad.{name}" in state:
                    parameter.grad = state[f"pending.grad.{name}"].clone()
                moments = {key: state[f"pending.adam.{key}.{name}"].clone() for key in ("step", "exp_avg", "exp_avg_sq") if f"pending.adam.{key}.{name}" in state}
                if moments:
                    optimizer.state[parameter] = moments
