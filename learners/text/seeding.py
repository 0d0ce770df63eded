"""Knowledge seeding with TRL: generalized distillation (GKD) and learning-to-imitate RL (GRPO).

PAPERS.md, "Language Models Need Sleep":
  L_GKD = (1-lambda) E_(x,y)~D [F(LM_teacher || LM_student)(y|x)] + lambda E_x E_y~student [F(...)(y|x)]
with D sampled from the teacher. TRL's `experimental.gkd.GKDTrainer` is exactly this
(`lmbda` = on-policy fraction, per step; `beta` picks F: 0 forward KL, 1 reverse KL,
0.5 JSD); `trl.DistillationTrainer` is its lambda = 1 special case, so GKD is used.
The off-policy part reads teacher samples we draw beforehand (the "messages" rows).

Learning to imitate: the student completes a prefix of a teacher sample; GRPO
(TRL `GRPOTrainer`, plain reward function) maximises
r = gamma r_sem + (1-gamma) r_abs (see lm_rewards).

L_KS = (1-alpha) E r - alpha E D weighs the two. The two trainers run one after the
other (distill, then imitate) with learning rates alpha*lr and (1-alpha)*lr, which is
that weighting applied to each term's gradient steps; alpha = 1 drops imitation.

Both trainers see only parameters with requires_grad (the stage freezes the rest),
run on CPU in fp32, save nothing and report to nothing. The `knowledge-seeding`
stage below draws D from the teacher that `expansion` froze (or freezes one now,
without expansion) on cues taken from the experience's documents. Every sequence
either trainer samples or trains on is rendered by the tokenizer's chat template,
which starts with <s> like every document wake reads: "<s>cue completion</s>".
(Sampled without <s>, the teacher's continuations were noise: a woken model's loss
on its own documents was 0.08 per token with it and 3.0 without.)
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import datasets
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerFast, PrinterCallback

from somna.learners.base import Metrics, derive_seed
from somna.learners.stages import SleepStage
from somna.learners.text.encoding import context_length, sample_completions
from somna.learners.text.rewards import abs_reward, combine_rewards, same_meaning
from somna.platform.registry import register_sleep_stage

if TYPE_CHECKING:
    from somna.learners.text.learner import TextSleepContext
    from somna.learners.text.sleep import TextSleepLearner

SEEDING_SALT = 7

COMMON_ARGS: dict[str, Any] = {
    "bf16": False,
    "use_cpu": True,
    "gradient_checkpointing": False,
    "report_to": "none",
    "save_strategy": "no",
    "logging_steps": 1,
    "disable_tqdm": True,
    "lr_scheduler_type": "constant",
    "weight_decay": 0.0,
    "dataloader_num_workers": 0,
}


def unpatch(model: PreTrainedModel) -> None:
    """Drop the instance-level `forward` GRPO installs (its fused LM head closes over *this* object's
    original forward, so a deepcopy — the next sleep's teacher, a LoRA copy — would silently run the
    original's weights)."""
    model.__dict__.pop("forward", None)


def _last_logged(history: list[dict[str, float]], key: str) -> float:
    values = [entry[key] for entry in history if key in entry]
    return float(sum(values) / len(values)) if values else float("nan")


def _quiet() -> Any:
    """TRL warns about things that do not apply to a from-scratch CPU model (no hub id, vLLM); keep logs readable."""
    for name in ("transformers", "trl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return warnings.catch_warnings()


def distill(
    student: PreTrainedModel,
    teacher: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    prompts: list[str],
    teacher_completions: list[str],
    *,
    lmbda: float,
    beta: float,
    steps: int,
    lr: float,
    batch_size: int,
    max_new_tokens: int,
    seed: int,
) -> dict[str, float]:
    """L_GKD over teacher samples D = (prompts, teacher_completions); returns the mean loss."""
    rows = [[{"role": "user", "content": p}, {"role": "assistant", "content": c}] for p, c in zip(prompts, teacher_completions)]
    with _quiet(), tempfile.TemporaryDirectory() as output_dir:
        warnings.simplefilter("ignore")
        from trl.experimental.gkd import GKDConfig, GKDTrainer

        args = GKDConfig(
            output_dir=output_dir,
            max_steps=steps,
            per_device_train_batch_size=batch_size,
            learning_rate=lr,
            lmbda=lmbda,
            beta=beta,
            max_new_tokens=max_new_tokens,
            temperature=1.0,
            max_length=context_length(student),
            seed=seed,
            **COMMON_ARGS,
        )
        trainer = GKDTrainer(model=student, teacher_model=teacher, args=args, train_dataset=datasets.Dataset.from_dict({"messages": rows}), processing_class=tokenizer)
        trainer.remove_callback(PrinterCallback)  # metrics go to the sleep event, not stdout
        trainer.train()
        return {"gkd_loss": _last_logged(trainer.state.log_history, "loss")}


def imitate(
    student: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    prefixes: list[str],
    targets: list[str],
    *,
    gamma: float,
    z0: float,
    judge_threshold: float,
    steps: int,
    lr: float,
    num_generations: int,
    max_new_tokens: int,
    seed: int,
) -> dict[str, float]:
    """GRPO on "complete the teacher's sample": reward gamma r_sem + (1-gamma) r_abs against the teacher's rest.

    Prefixes are chat user turns, so the student continues "<s>prefix" like a document."""
    from trl import GRPOConfig, GRPOTrainer

    seen: dict[str, list[float]] = {"reward": [], "r_sem": [], "r_abs": []}

    def reward(completions: list[list[dict[str, str]]], target: list[str], **_: Any) -> list[float]:
        rewards = []
        for completion, wanted in zip(completions, target):
            text = completion[0]["content"].strip()
            r_sem, r_abs = float(same_meaning(text, wanted, judge_threshold)), abs_reward(text, wanted, z0)
            rewards.append(combine_rewards(r_sem, r_abs, gamma))
            seen["r_sem"].append(r_sem)
            seen["r_abs"].append(r_abs)
        seen["reward"] += rewards
        return rewards

    with _quiet(), tempfile.TemporaryDirectory() as output_dir:
        warnings.simplefilter("ignore")
        args = GRPOConfig(
            output_dir=output_dir,
            max_steps=steps,
            per_device_train_batch_size=num_generations,
            num_generations=num_generations,
            max_completion_length=max_new_tokens,
            learning_rate=lr,
            beta=0.0,
            temperature=1.0,
            seed=seed,
            **COMMON_ARGS,
        )
        trainer = GRPOTrainer(
            model=student,
            reward_funcs=reward,
            args=args,
            train_dataset=datasets.Dataset.from_dict({"prompt": [[{"role": "user", "content": p}] for p in prefixes], "target": targets}),
            processing_class=tokenizer,
        )
        trainer.remove_callback(PrinterCallback)
        try:
            trainer.train()
        finally:
            unpatch(student)
    mean = {key: sum(values) / len(values) if values else float("nan") for key, values in seen.items()}
    return {"imitation_reward": mean["reward"], "r_sem": mean["r_sem"], "r_abs": mean["r_abs"]}


@dataclass
class GKDSeedingOptions:
    """`learner.sleep.options.knowledge-seeding` (PAPERS.md symbols)."""

    lmbda: float = 0.5  # on-policy fraction of GKD's sequences
    beta: float = 0.5  # divergence: 0 forward KL, 1 reverse KL, 0.5 JSD
    alpha: float = 0.5  # L_KS weight of distillation vs imitation (1 = no imitation)
    gamma: float = 0.5  # imitation reward weight of r_sem vs r_abs
    z0: float = 0.5  # r_abs is 0 beyond this normalised edit distance
    judge_threshold: float = 0.8  # r_sem = 1 when the completion's and the target's words have F1 >= this (any order)
    steps: int = 8
    lr: float = 1e-2
    num_prompts: int = 16
    prompt_words: int = 3  # a cue is the first words of a document
    batch_size: int = 4
    num_generations: int = 4
    max_new_tokens: int = 24
    prefix_fraction: float = 0.5  # the share of a teacher sample's words the student is given to complete

    def __post_init__(self) -> None:
        for key in ("lmbda", "beta", "alpha", "gamma", "z0", "judge_threshold", "prefix_fraction"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"learner.sleep.options.knowledge-seeding.{key} must be in [0, 1], got {getattr(self, key)}")


@register_sleep_stage("knowledge-seeding", modality="text")
class GKDSeeding(SleepStage):
    """L_KS = (1-alpha) E r - alpha E D over teacher samples, training only what expansion unlocked."""

    Options = GKDSeedingOptions
    hooks = ("model", "cms", "tokenizer", "frozen_copy", "apply_pending_updates", "receiver_block", "training_texts")

    def __call__(self, learner: TextSleepLearner, context: TextSleepContext) -> Metrics:
        opts, model, tokenizer = self.options, learner.model, learner.tokenizer
        teacher = context.teacher or learner.frozen_copy()
        learner.apply_pending_updates()
        trainable = self.trainable(learner, context)
        seed = derive_seed(learner.seed, context.index, SEEDING_SALT)
        prompts = self.prompts(learner.training_texts(context.experience), seed)
        completions = sample_completions(teacher, tokenizer, prompts, opts.max_new_tokens, seed)
        metrics: Metrics = {"trainable_params": float(sum(p.numel() for p in trainable))}
        train_only(model, trainable)
        try:
            if opts.alpha > 0:
                metrics |= distill(
                    model, teacher, tokenizer, prompts, completions,
                    lmbda=opts.lmbda, beta=opts.beta, steps=opts.steps, lr=opts.alpha * opts.lr,
                    batch_size=opts.batch_size, max_new_tokens=opts.max_new_tokens, seed=seed,
                )
            if opts.alpha < 1:
                prefixes, targets = zip(*(split_words(f"{p} {c}", opts.prefix_fraction) for p, c in zip(prompts, completions)))
                metrics |= imitate(
                    model, tokenizer, list(prefixes), list(targets),
                    gamma=opts.gamma, z0=opts.z0, judge_threshold=opts.judge_threshold, steps=opts.steps, lr=(1 - opts.alpha) * opts.lr,
                    num_generations=opts.num_generations, max_new_tokens=opts.max_new_tokens, seed=seed,
                )
        finally:
            train_only(model, list(model.parameters()))
            model.eval()
        return metrics

    @staticmethod
    def trainable(learner: TextSleepLearner, context: TextSleepContext) -> list[torch.nn.Parameter]:
        """The expert this sleep's expansion unlocked; without expansion in the stages (the -expansion
        ablation, opsd), the receiving CMS level itself."""
        if context.new_expert is not None:
            block, expert = context.new_expert
            return list(learner.cms[block].experts[expert].parameters())
        return list(learner.cms[learner.receiver_block()].parameters())

    def prompts(self, texts: list[str], seed: int) -> list[str]:
        """Openings of the experience's documents: the cues the teacher dreams from."""
        count = self.options.num_prompts
        order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(seed)).tolist()
        picks = (order * (count // max(len(order), 1) + 1))[:count]
        return [" ".join(texts[i].split()[: self.options.prompt_words]) for i in picks]


def split_words(text: str, fraction: float) -> tuple[str, str]:
    """(the first `fraction` of the words, at least one; the rest): a prefix to complete and its target."""
    words = text.split()
    cut = max(1, int(len(words) * fraction))
    return " ".join(words[:cut]), " ".join(words[cut:])


def train_only(model: torch.nn.Module, parameters: list[torch.nn.Parameter]) -> None:
    """requires_grad on exactly `parameters` (TRL's trainers optimise whatever requires grad)."""
    keep = {id(p) for p in parameters}
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in keep)
