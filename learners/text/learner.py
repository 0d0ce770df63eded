"""Shared machinery of the text learners: the sleep LM, online wake with CMS update periods, probe evaluation.

Wake reads the experience's documents (column `text`, see somna.curricula.text)
as a stream of next-token batches. Parameter groups update at their own
periods (PAPERS.md, Nested Learning eq. 71, "online consolidation"): the core
(embeddings, short-term layers, head) every `core_period` steps and CMS block l
every C(l) steps, gradients summed in between. A gradient still pending at the
end of wake is the "computed, not yet applied" update that a sleep stage may
consolidate around; `sleep` applies whatever is left once its stages ran.

Evaluation decodes greedily from each probe's `prompt` and scores against
`answer`: exact match, chrF, and the perplexity of the answer given the prompt.
"accuracy" is the curriculum's score (`experience.metadata["score"]`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from somna.learners.base import Learner, LearnerConfig, Metrics, SleepContext
from somna.learners.text.model import SleepLM, SleepLMConfig
from somna.learners.text.rewards import chrf, exact_match
from somna.learners.text.tokenizer import VOCAB_SIZE, build_byte_tokenizer


def encode_pairs(tokenizer: Any, prompts: list[str], completions: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """"<s>prompt completion</s>" (or "<s>completion</s>" for an empty prompt), left-padded and truncated
    from the left; labels are the ids with padding and the prompt ignored (-100)."""
    texts = [f"{p} {c}" if p else c for p, c in zip(prompts, completions)]
    batch = tokenizer(
        [tokenizer.bos_token + t + tokenizer.eos_token for t in texts],
        padding=True, truncation=True, max_length=max_length, return_tensors="pt", add_special_tokens=False,
    )
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    for row, (prompt, completion) in enumerate(zip(prompts, completions)):
        scored = len(f" {completion}".encode()) + 1 if prompt else labels.size(1)  # completion bytes + </s>
        labels[row, : max(0, labels.size(1) - scored)] = -100
    batch["labels"] = labels
    return batch


@torch.no_grad()
def answer_nll(model: torch.nn.Module, tokenizer: Any, prompts: list[str], answers: list[str]) -> tuple[float, int]:
    """Summed negative log-likelihood of " answer</s>" after "<s>prompt", and its token count."""
    texts = [f"{tokenizer.bos_token}{p} {a}{tokenizer.eos_token}" for p, a in zip(prompts, answers)]
    batch = tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
    logits = model(**batch).logits[:, :-1]
    targets = batch["input_ids"][:, 1:]
    answer_lengths = torch.tensor([len(f" {a}".encode()) + 1 for a in answers])
    positions = torch.arange(targets.size(1))
    scored = positions[None, :] >= targets.size(1) - answer_lengths[:, None]
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none").view_as(targets)
    return float((nll * scored).sum()), int(scored.sum())


@dataclass
class LMModelConfig:
    dim: int = 64
    num_heads: int = 4
    num_layers: int = 1
    max_positions: int = 256
    mlp_ratio: int = 2
    cms_periods: list[int] = field(default_factory=lambda: [1, 4, 16])
    num_experts: int = 4
    expert_rank: int = 8
    expert_top_k: int = 0
    short_term: str = "attention"  # or the name of a registered kernel layer


@dataclass
class TextLearnerConfig(LearnerConfig):
    model: LMModelConfig = field(default_factory=LMModelConfig)
    lr: float = 3e-3
    epochs: int = 1  # 1 = the online setting: every document is read once
    batch_size: int = 8
    max_length: int = 128
    core_period: int = 1
    eval_max_new_tokens: int = 24
    eval_batch_size: int = 64
    reward_holdout: float = 0.0  # fraction of each experience's QA lines wake does not read (dreaming's reward probes)


@dataclass
class TextSleepContext(SleepContext):
    """A text learner's sleep: what its stages hand each other (expansion -> knowledge seeding)."""

    teacher: torch.nn.Module | None = None  # the model before expansion and the pending update (frozen)
    new_expert: tuple[int, int] | None = None  # (CMS block, expert) that expansion unlocked


class TextLearner(Learner):
    """Next-token learning on text streams with a `SleepLM`; subclasses change data or add sleep hooks."""

    Config = TextLearnerConfig
    modality = "text"
    model: SleepLM  # the parts sleep stages use (their hooks)
    tokenizer: Any
    # May sleep on Ray Train workers (learners/shared/distributed.py): the state dict carries wake's pending
    # update; TRL's trainers shard their batches through accelerate, dreaming shards its LoRA trials,
    # and the other sleep loops run replicated (same seeds, same floats on every rank).
    data_parallel_sleep = True

    def __init__(self, config: Any, info: Any, seed: int):
        super().__init__(config, info, seed)
        for name in ("epochs", "batch_size", "core_period"):
            if getattr(config, name) < 1:
                raise ValueError(f"learner.{name} must be >= 1, got {getattr(config, name)}")
        if not 0.0 <= config.reward_holdout < 1.0:
            raise ValueError(f"learner.reward_holdout must be in [0, 1), got {config.reward_holdout}")
        if any(period < 1 for period in config.model.cms_periods):
            raise ValueError(f"learner.model.cms_periods must all be >= 1, got {list(config.model.cms_periods)}")
        self.tokenizer = build_byte_tokenizer()
        torch.manual_seed(seed)
        model_config = {key: config.model[key] for key in config.model}
        model_config["cms_periods"] = list(model_config["cms_periods"])
        self.model = SleepLM(SleepLMConfig(vocab_size=VOCAB_SIZE, **model_config))
        self.model.eval()
        self.step = torch.zeros((), dtype=torch.long)  # wake steps so far: fixes the phase of every period
        self._optimizers: list[tuple[int, torch.optim.Optimizer]] | None = None

    # -- data -----------------------------------------------------------------------------
    def training_texts(self, experience: Any) -> list[str]:
        """Documents this wake reads (all but the held-out QA lines); `replay` adds its buffer."""
        held_out = {row["text"] for row in self.held_out_rows(experience)}
        return [text for text in experience.train["text"] if text not in held_out]

    def held_out_rows(self, experience: Any) -> list[dict[str, str]]:
        """A seeded `reward_holdout` fraction (rounded down) of the experience's QA lines: never read in wake.

        Every learner of a comparison holds out the same lines, so all read the same data;
        a dreaming learner uses them as the questions that reward its dreams (SEAL's
        per-passage questions), the others never see them."""
        qa = [row for row in experience.train if row["prompt"]]
        count = int(self.config.reward_holdout * len(qa))
        picks = torch.randperm(len(qa), generator=self.generator(experience.index, salt=13))[:count]
        return [qa[i] for i in sorted(picks.tolist())]

    def encode_documents(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """<s> text </s>, left-padded; labels are the ids with padding ignored."""
        return encode_pairs(self.tokenizer, [""] * len(texts), texts, self.config.max_length)

    # -- wake: online reading with CMS periods -----------------------------------------------
    def parameter_groups(self) -> list[tuple[int, list[torch.nn.Parameter]]]:
        """(update period, parameters): the core, then one group per CMS block."""
        blocks = [list(block.parameters()) for block in self.model.cms]
        in_blocks = {id(p) for block in blocks for p in block}
        core = [p for p in self.model.parameters() if id(p) not in in_blocks]
        return [(self.config.core_period, core)] + list(zip(self.config.model.cms_periods, blocks))

    def new_optimizers(self) -> list[tuple[int, torch.optim.Optimizer]]:
        """One Adam per parameter group, with the group's update period (fresh every wake)."""
        return [(period, torch.optim.Adam(params, lr=self.config.lr)) for period, params in self.parameter_groups()]

    def wake(self, experience: Any) -> Metrics:
        texts = self.training_texts(experience)
        self.model.zero_grad(set_to_none=True)  # a sleep stage's last backward must not add to wake's first update
        self._optimizers = self.new_optimizers()
        generator = self.generator(experience.index)
        self.model.train()
        total, steps = 0.0, 0
        for _ in range(self.config.epochs):
            for batch_ids in torch.randperm(len(texts), generator=generator).split(self.config.batch_size):
                batch = self.encode_documents([texts[i] for i in batch_ids])
                loss = self.model(**batch).loss
                loss.backward()
                self.step += 1
                for period, optimizer in self._optimizers:
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

    @torch.no_grad()
    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        """Greedy completions (up to </s> or a newline), decoded and stripped."""
        self.model.eval()
        batch = self.tokenizer([self.tokenizer.bos_token + p for p in prompts], padding=True, return_tensors="pt", add_special_tokens=False)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        room = self.model.config.max_positions - int(mask.sum(-1).max())
        done = torch.zeros(len(prompts), dtype=torch.bool)
        new_tokens = []
        for _ in range(max(0, min(max_new_tokens, room))):
            next_ids = self.model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits[:, -1].argmax(-1)
            next_ids = next_ids.masked_fill(done, self.tokenizer.pad_token_id)
            new_tokens.append(next_ids)
            done |= (next_ids == self.tokenizer.eos_token_id) | (next_ids == ord("\n"))
            ids = torch.cat([ids, next_ids[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones_like(next_ids)[:, None]], dim=1)
            if bool(done.all()):
                break
        if not new_tokens:
            return [""] * len(prompts)
        out = torch.stack(new_tokens, dim=1)
        return [self.tokenizer.decode([t for t in row.tolist() if t < 256], skip_special_tokens=True).strip() for row in out]

    def evaluate(self, experience: Any, batch_size: int | None = None) -> Metrics:
        rows = [row for row in experience.test if row["prompt"]]
        batch_size = batch_size or self.config.eval_batch_size
        matches, chrfs, nll, tokens = [], [], 0.0, 0
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            prompts, answers = [self.probe_prompt(r) for r in chunk], [r["answer"] for r in chunk]
            predictions = self.generate(prompts, self.config.eval_max_new_tokens)
            matches += [exact_match(p, a) for p, a in zip(predictions, answers)]
            chrfs += [chrf(p, a) for p, a in zip(predictions, answers)]
            chunk_nll, chunk_tokens = answer_nll(self.model, self.tokenizer, prompts, answers)
            nll, tokens = nll + chunk_nll, tokens + chunk_tokens
        scores = {
            "exact_match": sum(matches) / max(len(matches), 1),
            "chrf": sum(chrfs) / max(len(chrfs), 1),
            "perplexity": math.exp(min(nll / max(tokens, 1), 50.0)),
        }
        score = experience.metadata.get("score", "exact_match")
        if score not in ("exact_match", "chrf"):
            raise ValueError(f"experience.metadata['score'] must be exact_match or chrf, got {score!r}")
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
