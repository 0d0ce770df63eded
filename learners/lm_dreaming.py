"""Dreaming (PAPERS.md, "Language Models Need Sleep" / SEAL): the model writes its own rehearsal data.

For the experience just woken on (context C = its passages; metric tau = minus the
answer NLL of the QA lines it contains, or of its passages when it has none —
test probes are never read), one ReST-EM round is:
  1. dream: m samples ~ LM(. | c) per passage c, with novelty routing (each CMS
     router also sends every token to one random unlocked expert) if `random_expert`;
  2. gradient selection: score each dream by the L2 norm of the gradient of the SFT
     loss it induces on the model's parameters (a dream the model already predicts
     perfectly scores ~0: it would teach nothing); keep the top-k plus b random ones;
     without `gradient_selection`, k + b random ones;
  3. reward: each kept dream fine-tunes an isolated PEFT LoRA copy of the model
     (ranks `lora_rank` on every CMS MLP and attention projection); reward = 1 if tau
     improves (the real-valued improvement is logged too);
  4. ReST-EM M-step: supervised fine-tuning of the generator (the model itself) on
     (passage -> rewarded dream).
After the rounds the model consolidates by SFT on the last round's rewarded dreams.
Every dream, its score, whether it was kept, its reward and improvement go to
`dreams.jsonl` in the sleep's artifacts directory. No past raw data is used.
LoRA copies run one after another here (no Ray fan-out yet).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model

from somna.learners.base import Metrics, SleepConfig, SleepContext
from somna.learners.lm_baselines import FinetuneLM
from somna.learners.lm_learner import TextLearner, TextLearnerConfig, answer_nll, encode_pairs
from somna.platform.registry import register_learner

LORA_TARGETS = ["fc_in", "fc_out", "qkv", "out"]


def sft_steps(model: torch.nn.Module, batch: dict[str, torch.Tensor], steps: int, lr: float) -> float:
    """`steps` Adam steps of the masked next-token loss on one batch; returns the last loss."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=lr)
    model.train()
    loss = torch.zeros(())
    for _ in range(steps):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return float(loss.detach())


def gradient_scores(model: torch.nn.Module, tokenizer: Any, dreams: list[str], max_length: int) -> list[float]:
    """Per dream: the L2 norm of the gradient of its SFT loss with respect to every trainable parameter."""
    scores = []
    for dream in dreams:
        model.zero_grad()
        model(**encode_pairs(tokenizer, [""], [dream], max_length)).loss.backward()
        scores.append(float(torch.sqrt(sum((p.grad**2).sum() for p in model.parameters() if p.grad is not None))))
    model.zero_grad()
    return scores


def select(scores: list[float], top_k: int, random_keep: int, generator: torch.Generator) -> list[int]:
    """Indices of the top-k scores plus `random_keep` others drawn at random (diversity)."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    top, rest = order[:top_k], order[top_k:]
    extra = [rest[i] for i in torch.randperm(len(rest), generator=generator)[:random_keep].tolist()]
    return top + extra


def task_score(model: torch.nn.Module, tokenizer: Any, probes: tuple[list[str], list[str]]) -> float:
    """tau: minus the mean answer NLL per token on the sleep's own probes."""
    nll, tokens = answer_nll(model, tokenizer, *probes)
    return -nll / max(tokens, 1)


def lora_improvement(
    model: torch.nn.Module, tokenizer: Any, dream: str, probes: tuple[list[str], list[str]], *, rank: int, steps: int, lr: float, max_length: int
) -> float:
    """tau after fine-tuning an isolated LoRA copy on `dream`, minus tau before; the model is untouched."""
    before = task_score(model, tokenizer, probes)
    copy_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=LORA_TARGETS, lora_dropout=0.0))
    sft_steps(copy_model, encode_pairs(tokenizer, [""], [dream], max_length), steps, lr)
    return task_score(copy_model, tokenizer, probes) - before


@dataclass
class DreamRecord:
    round: int
    passage: str
    dream: str
    score: float = 0.0
    kept: bool = False
    reward: float = 0.0
    improvement: float = 0.0


class DreamingMixin:
    """The `dream` hook of the `dreaming` sleep stage, for TextLearner subclasses."""

    def dream(
        self: Any,
        context: SleepContext,
        *,
        dreams_per_passage: int = 2,
        max_passages: int = 4,
        top_k: int = 2,
        random_keep: int = 1,
        rounds: int = 1,
        gradient_selection: bool = True,
        random_expert: bool = True,
        lora_rank: int = 4,
        lora_steps: int = 4,
        lora_lr: float = 1e-2,
        sft_steps_per_round: int = 4,
        consolidation_steps: int = 8,
        lr: float = 3e-3,
        max_new_tokens: int = 48,
    ) -> Metrics:
        if min(dreams_per_passage, max_passages, rounds) < 1 or min(top_k, random_keep) < 0:
            raise ValueError("learner.sleep.options.dreaming: dreams_per_passage, max_passages, rounds must be >= 1; top_k, random_keep >= 0")
        self.apply_pending_updates()  # wake's pending slow-block gradient lands first: gradient scoring reuses .grad
        generator = self.generator(context.index, salt=11)
        passages, probes = dream_context(context.experience, max_passages)
        records: list[DreamRecord] = []
        rewarded: list[DreamRecord] = []
        fractions = []
        for round_index in range(rounds):
            prompts = [p for p in passages for _ in range(dreams_per_passage)]
            if random_expert:
                with self.model.novelty_routing(generator):
                    texts = self.sample_texts(prompts, max_new_tokens, generator)
            else:
                texts = self.sample_texts(prompts, max_new_tokens, generator)
            batch = [DreamRecord(round_index, p, t) for p, t in zip(prompts, texts) if t.strip()]
            scores = gradient_scores(self.model, self.tokenizer, [r.dream for r in batch], self.config.max_length) if gradient_selection else [0.0] * len(batch)
            kept = select(scores, top_k if gradient_selection else 0, random_keep + (0 if gradient_selection else top_k), generator)
            for index, record in enumerate(batch):
                record.score = scores[index]
            for index in kept:
                record = batch[index]
                record.kept = True
                record.improvement = lora_improvement(
                    self.model, self.tokenizer, record.dream, probes, rank=lora_rank, steps=lora_steps, lr=lora_lr, max_length=self.config.max_length
                )
                record.reward = float(record.improvement > 0)
            rewarded = [batch[i] for i in kept if batch[i].reward > 0]
            fractions.append(len(rewarded) / max(len(kept), 1))
            if rewarded:  # ReST-EM M-step: the generator imitates its rewarded dreams
                sft_steps(self.model, encode_pairs(self.tokenizer, [r.passage for r in rewarded], [r.dream for r in rewarded], self.config.max_length), sft_steps_per_round, lr)
            records += batch
        consolidated = 0.0
        if rewarded:
            consolidated = sft_steps(self.model, encode_pairs(self.tokenizer, [""] * len(rewarded), [r.dream for r in rewarded], self.config.max_length), consolidation_steps, lr)
        write_dreams(context, records)
        return {
            "dreams": float(len(records)),
            **{f"rewarded_fraction/round{i}": fraction for i, fraction in enumerate(fractions)},
            "mean_improvement": sum(r.improvement for r in records if r.kept) / max(sum(r.kept for r in records), 1),
            "consolidation_loss": consolidated,
        }

    @torch.no_grad()
    def sample_texts(self: Any, prompts: list[str], max_new_tokens: int, generator: torch.Generator) -> list[str]:
        """Sampled continuations of `prompts` ("<s>prompt " -> up to </s>), seeded by `generator`."""
        torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=generator)))
        batch = self.tokenizer([f"{self.tokenizer.bos_token}{p} " for p in prompts], padding=True, return_tensors="pt", add_special_tokens=False)
        out = self.model.generate(
            **batch, max_new_tokens=max_new_tokens, do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
            pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id,
        )
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in out[:, batch["input_ids"].size(1) :]]


def dream_context(experience: Any, max_passages: int) -> tuple[list[str], tuple[list[str], list[str]]]:
    """(passages to dream from, tau's probes): the experience's documents and its own QA lines."""
    documents = [row for row in experience.train if not row["prompt"]] or list(experience.train)
    passages = [row["text"] for row in documents][:max_passages]
    qa = [row for row in experience.train if row["prompt"]]
    probes = ([r["prompt"] for r in qa], [r["answer"] for r in qa]) if qa else ([""] * len(passages), passages)
    return passages, probes


def write_dreams(context: SleepContext, records: list[DreamRecord]) -> None:
    """Write this sleep's dreams to dreams.jsonl, for a researcher to read what the model dreamed.

    One sleep per experience directory: an experience redone after a crash replaces its file."""
    if context.artifacts_dir is None:
        return
    path = Path(context.artifacts_dir) / "dreams.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        for record in records:
            handle.write(json.dumps({"experience": context.index, **record.__dict__}) + "\n")


@dataclass
class SealConfig(TextLearnerConfig):
    name: str = "seal"
    sleep: SleepConfig = field(default_factory=lambda: SleepConfig(stages=["dreaming"]))


@register_learner("seal", modality="text")
class SealLM(DreamingMixin, TextLearner):
    """SEAL-style: fine-tune, then dream self-edits rewarded through LoRA copies (ReST-EM); no expansion or seeding."""

    Config = SealConfig


@register_learner("finetune-no-dream", modality="text")
class FinetuneNoDreamLM(FinetuneLM):
    """The dreaming table's fine-tuning row: next-token SFT on each experience, no sleep."""
