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

L_KS = (1-alpha) E r - alpha E D weighs the two. Distillation runs first, imitation after it,
with learning rates alpha*lr and (1-alpha)*lr, which is that weighting applied to each term's
gradient steps; alpha = 1 (the default) drops imitation.

The `knowledge-seeding` stage below distills the sleep's teacher (the model with its fast
memory, text/fast_memory.py) into the student (the slow model plus the new expert), on data
both write themselves, and protects the old in the same steps (see GKDSeeding). Both TRL
trainers see only parameters with requires_grad (the stage freezes the rest), run on CPU in
fp32, save nothing and report to nothing. Every sequence either trainer samples or trains on
is rendered by the tokenizer's chat template, which starts with <s> like every document wake
reads: "<s>cue completion</s>". (Sampled without <s>, the teacher's continuations were noise:
a woken model's loss on its own documents was 0.08 per token with it and 3.0 without.)
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import datasets
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerFast, PrinterCallback

from somna.learners.base import Metrics, derive_seed
from somna.learners.stages import SleepStage
from somna.learners.text.encoding import (
    IGNORE, completion_kl, context_length, encode_pairs, greedy_answers, kl_divergence, on_device, sample_completions,
    scored_log_probs,
)
from somna.learners.text.experts import recorded_outputs
from somna.learners.text.learner import dev_rows, training_only
from somna.learners.text.rewards import abs_reward, combine_rewards, same_meaning
from somna.platform.registry import register_sleep_stage

if TYPE_CHECKING:
    from somna.learners.text.learner import TextSleepContext
    from somna.learners.text.sleep import TextSleepLearner

SEEDING_SALT = 7
ROUTE_ON = ("all", "questions")  # the rows the router loss reads (`GKDSeedingOptions.route_on`)
PROTECT_WHERE = ("all", "gate-open")  # the protection rows each step draws from (`GKDSeedingOptions.protect_where`)
PROTECT_TEMPERATURE = 0.7  # the slow model's own generations: at 1.0 a small base's samples drift off its knowledge

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
    """Drop the instance-level `forward` a TRL trainer installs (its fused LM head closes over *this* object's
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
        try:
            trainer.train()
        finally:
            unpatch(student)
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
    alpha: float = 1.0  # L_KS weight of distillation vs imitation (1 = no imitation; see the README for why it is off)
    gamma: float = 0.5  # imitation reward weight of r_sem vs r_abs
    z0: float = 0.5  # r_abs is 0 beyond this normalised edit distance
    judge_threshold: float = 0.8  # r_sem = 1 when the completion's and the target's words have F1 >= this (any order)
    steps: int = 300  # distillation steps (and as many token-level GKD steps when the fast memory is in the weights)
    imitation_steps: int = 8  # GRPO steps
    rounds: int = 2  # alternations of token-level GKD and sequence-level steps (a fast memory in the weights only)
    lr: float = 2e-2
    questions_per_passage: int = 8  # questions the teacher writes about each passage (its own QA)
    num_prompts: int = 16  # restatement cues: the first `prompt_words` words of the experience's documents
    prompt_words: int = 3
    protect_prompts: int = 256  # the slow model's own generations it must keep producing (0: no protection)
    protect_share: float = 0.8  # the share of each sequence-level batch's rows that are those generations
    rehearse_questions: int = 0  # of its own closed-book questions, how many each sleep keeps as protection cues for later sleeps
    cue_rows: int = 0  # protection rows per step drawn from those cues alone, beside batch_size from the generations (0: one shared draw)
    route_weight: float = 0.0  # router loss: the new expert's router row learns to open on the new pairs and stay shut on protection's (0: off)
    route_on: str = "all"  # the rows the router loss reads: "all", or only the closed-book "questions" of both sides
    protect_where: str = "all"  # protection's rows: "all", or "gate-open": those on which the new expert's keyed gate opens (needs learner.model.expert_keys)
    batch_size: int = 4
    num_generations: int = 4
    max_new_tokens: int = 24
    prefix_fraction: float = 0.5  # the share of a restatement's words the student is given to complete

    def __post_init__(self) -> None:
        for key in ("lmbda", "beta", "alpha", "gamma", "z0", "judge_threshold", "prefix_fraction"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"learner.sleep.options.knowledge-seeding.{key} must be in [0, 1], got {getattr(self, key)}")
        if not 0.0 <= self.protect_share < 1.0:
            raise ValueError(f"learner.sleep.options.knowledge-seeding.protect_share must be in [0, 1), got {self.protect_share}")
        if self.rounds < 1:
            raise ValueError(f"learner.sleep.options.knowledge-seeding.rounds must be >= 1, got {self.rounds}")
        for key, allowed in (("route_on", ROUTE_ON), ("protect_where", PROTECT_WHERE)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"learner.sleep.options.knowledge-seeding.{key} must be one of {', '.join(allowed)}, got {getattr(self, key)!r}")
        for key in ("steps", "imitation_steps", "questions_per_passage", "num_prompts", "protect_prompts", "rehearse_questions", "cue_rows", "route_weight"):
            if getattr(self, key) < 0:
                raise ValueError(f"learner.sleep.options.knowledge-seeding.{key} must be >= 0, got {getattr(self, key)}")
        if self.cue_rows and not self.rehearse_questions:
            raise ValueError("learner.sleep.options.knowledge-seeding.cue_rows draws from the rehearsal cues: set rehearse_questions > 0")


def closed_book(prompt: str) -> bool:
    """Whether a seeding prompt is a closed-book question ("Q: ... A:"), not a passage or a restatement cue."""
    return prompt.startswith("Q:")


@dataclass
class SeedingData:
    """Distillation pairs: the student reads `prompts`, the teacher `teacher_prompts` (its fast memory in context)."""

    prompts: list[str]
    teacher_prompts: list[str]
    completions: list[str]

    def take(self, indices: list[int]) -> SeedingData:
        """The pairs at `indices`, in that order."""
        return SeedingData(*([column[i] for i in indices] for column in (self.prompts, self.teacher_prompts, self.completions)))

    def partition(self, chosen: set[str]) -> tuple[SeedingData, SeedingData]:
        """(the pairs whose student prompt is in `chosen`, the others)."""
        inside = [prompt in chosen for prompt in self.prompts]
        return self.take([i for i, s in enumerate(inside) if s]), self.take([i for i, s in enumerate(inside) if not s])


@register_sleep_stage("knowledge-seeding", modality="text")
class GKDSeeding(SleepStage):
    """L_KS = (1-alpha) E r - alpha E D: the new knowledge from the teacher, the old protected by the slow model.

    Trains only `learner.sleep_parameters` (the new expert and its router row). The data, drawn fresh
    each sleep from the models themselves (no stored raw data, no probe of any split):
      new      the teacher's own QA about each new passage (it reads the passage and writes a question;
               the question, asked closed-book, gets the teacher's answer from its fast memory) and
               restatements (each passage's opening words, continued from the fast memory: verbatim
               when the store holds the passage, else sampled from the teacher);
      protect  the slow model's own generations: passages it writes from nothing, its reading items
               about them, and those questions asked closed-book; with `rehearse_questions`, also the
               closed-book questions the teacher wrote in earlier sleeps (`learner.rehearsal_cues`:
               the model's own text, no passage and no answer), answered by the slow model, which
               holds the earlier sleeps' experts. The slow model cannot write about earlier
               experiences' people by itself, so without these cues nothing protects them.
    Every step's loss is (1 - protect_share) x the completion loss on the teacher's samples (sequence-
    level distillation) + protect_share x KL(slow || student) on the slow model's generations (with
    `cue_rows`, plus that many rows of the cues' own pairs each step, so that more generations do not
    draw the cues less often), so the
    expert and its router learn where to act and where to stay off in the same step. With `route_weight`,
    the router is also told directly: a binary cross-entropy pulls its gate towards 1 on the new pairs and
    towards 0 on the protection rows (`routing_loss`), so that it may learn *which inputs* are new rather
    than only the outputs protection happens to ask about. Both sides mix forms (new: questions and passage
    restatements; protection: questions and reading items), so `route_on="questions"` reads only the
    closed-book questions of both, whose only difference is whom they ask about. A teacher whose
    fast memory is in its weights is also distilled token by token (TRL GKD, `rounds` alternations).
    Learning to imitate (GRPO) follows when alpha < 1. Logged: the teacher-student KL on the new pairs
    before and after, dev-split exact match of the teacher (the "in fast memory" ceiling) and of
    the student before and after, and how far the new expert's router opens on new and on protection rows.
    With a keyed gate (`learner.model.expert_keys`), the new expert's keys are stored before any step
    (`store_keys`), so it trains, as it will act, only near the inputs of its new pairs. Protection's KL then
    reaches the expert only through the rows its gate opens on: with `protect_where="gate-open"` every
    protection row drawn is one of those (`gate_open_rows`), so the old inputs the gate lets through are the
    ones guarded.
    """

    Options = GKDSeedingOptions
    hooks = ("model", "tokenizer", "fast_memory", "sleep_parameters", "training_texts", "frozen_copy", "rehearsal_cues", "dev_exact_match")

    def check_stages(self, stages: list[str]) -> None:
        if self.options.route_weight and "expansion" not in stages:
            raise ValueError("learner.sleep.options.knowledge-seeding.route_weight trains a new expert's router: it needs expansion in learner.sleep.stages")
        if self.options.protect_where == "gate-open" and "expansion" not in stages:
            raise ValueError("learner.sleep.options.knowledge-seeding.protect_where=gate-open reads a new expert's keyed gate: it needs expansion in learner.sleep.stages")

    def __call__(self, learner: TextSleepLearner, context: TextSleepContext) -> Metrics:
        opts, model, tokenizer = self.options, learner.model, learner.tokenizer
        teacher = context.teacher or learner.frozen_copy()
        slow = context.slow or learner.frozen_copy()
        seed = derive_seed(learner.seed, context.index, SEEDING_SALT)
        new = self.new_knowledge(learner, teacher, context.experience, seed)
        protect = self.protection(learner, slow, seed)
        metrics: Metrics = {}
        guarded = protect
        if context.new_expert and learner.cms[context.new_expert[0]].expert_keys is not None:
            metrics |= store_keys(learner, context.new_expert, new, protect, context.experience, seed)
            if opts.protect_where == "gate-open":
                guarded = protect.take(gate_open_rows(learner, context.new_expert, protect))
                metrics |= {"protect_rows": float(len(protect.prompts)), "protect_rows_gate_open": float(len(guarded.prompts))}
        context.protection = guarded
        cues, generations = guarded.partition(set(learner.rehearsal_cues)) if opts.cue_rows else (None, guarded)
        gap = lambda: completion_kl(teacher, model, tokenizer, new.teacher_prompts, new.prompts, new.completions, learner.config.max_length)  # noqa: E731
        trainable = learner.sleep_parameters(context)
        router = learner.cms[context.new_expert[0]].experts[context.new_expert[1]].gate if context.new_expert else None
        metrics |= {"trainable_params": float(sum(p.numel() for p in trainable)), "new_pairs": float(len(new.prompts)), "kl_before": gap()}
        metrics |= dev_scores(learner, teacher, context.experience, "before")
        with training_only(model, trainable):
            rounds = opts.rounds if learner.fast_memory.token_level else 1
            for round_index in range(rounds if opts.alpha > 0 else 0):
                steps = share(opts.steps, rounds, round_index)
                if learner.fast_memory.token_level:
                    metrics |= self.gkd(learner, teacher, new, steps, seed + round_index)
                metrics["sequence_kd_loss"] = supervised_steps(
                    learner, new, generations, slow, steps, opts.alpha * opts.lr, opts.batch_size, opts.protect_share, seed + round_index,
                    router=router, route_weight=opts.route_weight, route_on=opts.route_on, cues=cues, cue_rows=opts.cue_rows,
                )
            if opts.alpha < 1 and opts.imitation_steps:
                metrics |= imitate(
                    model, tokenizer, *imitation_targets(new, opts.prefix_fraction),
                    gamma=opts.gamma, z0=opts.z0, judge_threshold=opts.judge_threshold, steps=opts.imitation_steps,
                    lr=(1 - opts.alpha) * opts.lr, num_generations=opts.num_generations, max_new_tokens=opts.max_new_tokens, seed=seed,
                )
        metrics["kl_after"] = gap()
        if router is not None:
            metrics |= {f"router_open_{name}": router_openness(model, router, tokenizer, data, learner.config.max_length, seed) for name, data in (("new", new), ("protect", protect))}
        metrics["rehearsal_cues"] = float(len(learner.rehearsal_cues))
        learner.rehearsal_cues += kept_questions(new, opts.rehearse_questions, seed)
        return metrics | dev_scores(learner, None, context.experience, "after")

    def new_knowledge(self, learner: TextSleepLearner, teacher: torch.nn.Module, experience: Any, seed: int) -> SeedingData:
        """The teacher's QA about each passage and its restatements (see the class docstring)."""
        opts, tokenizer, memory = self.options, learner.tokenizer, learner.fast_memory
        passages = learner.training_texts(experience)
        asked = [p for p in passages for _ in range(opts.questions_per_passage)]
        written = sample_completions(teacher, tokenizer, [f"{p} Q:" for p in asked], opts.max_new_tokens, seed)
        questions = [(passage, q) for passage, q in zip(asked, (question_of(text) for text in written)) if q]
        cues = [(passages[i], " ".join(passages[i].split()[: opts.prompt_words])) for i in pick(len(passages), opts.num_prompts, seed)]
        prompts = [f"Q: {q} A:" for _, q in questions] + [cue for _, cue in cues]
        teacher_prompts = [memory.teacher_prompt(prompt, passage) for (passage, _), prompt in zip(questions + cues, prompts)]
        answers = greedy_answers(teacher, tokenizer, teacher_prompts[: len(questions)], opts.max_new_tokens)
        restatements = [memory.recall(passage, cue) for passage, cue in cues]  # verbatim when the store holds the passage
        missing = [i for i, text in enumerate(restatements) if text is None]
        samples = sample_completions(teacher, tokenizer, [teacher_prompts[len(questions) + i] for i in missing], opts.max_new_tokens, seed)
        for i, text in zip(missing, samples):
            restatements[i] = text.split(" Q:")[0]
        keep = [i for i, completion in enumerate(answers + restatements) if completion]
        completions = answers + restatements
        return SeedingData([prompts[i] for i in keep], [teacher_prompts[i] for i in keep], [completions[i] for i in keep])

    def protection(self, learner: TextSleepLearner, slow: torch.nn.Module, seed: int) -> SeedingData:
        """The slow model's own generations, what it must keep producing: passages it writes from nothing, its
        reading items about them (question and answer after the passage) and those questions asked closed-book."""
        opts, tokenizer = self.options, learner.tokenizer
        written = sample_completions(slow, tokenizer, [""] * opts.protect_prompts, 2 * opts.max_new_tokens, seed + 1, PROTECT_TEMPERATURE)
        reading = [f"{passage} Q:" for passage in (text.split(" Q:")[0] for text in written) if passage]
        items = sample_completions(slow, tokenizer, reading, opts.max_new_tokens, seed + 2, PROTECT_TEMPERATURE)
        closed = [f"Q: {q} A:" for q in map(question_of, items) if q] + learner.rehearsal_cues
        pairs = list(zip(reading, items)) + list(zip(closed, greedy_answers(slow, tokenizer, closed, opts.max_new_tokens)))
        pairs = [(prompt, completion) for prompt, completion in pairs if completion]
        return SeedingData([p for p, _ in pairs], [p for p, _ in pairs], [c for _, c in pairs])

    def gkd(self, learner: TextSleepLearner, teacher: torch.nn.Module, data: SeedingData, steps: int, seed: int) -> Metrics:
        opts = self.options
        return distill(
            learner.model, teacher, learner.tokenizer, data.prompts, data.completions,
            lmbda=opts.lmbda, beta=opts.beta, steps=steps, lr=opts.alpha * opts.lr,
            batch_size=opts.batch_size, max_new_tokens=opts.max_new_tokens, seed=seed,
        )


@torch.no_grad()
def level_passes(
    model: torch.nn.Module, block: torch.nn.Module, tokenizer: Any, data: SeedingData, max_length: int, batch_size: int = 128,
) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """(`block`'s input (rows, tokens, dim), the `encode_pairs` batch) for each batch of `data`'s pairs, in order."""
    for start in range(0, len(data.prompts), batch_size):
        batch = on_device(encode_pairs(tokenizer, data.prompts[start : start + batch_size], data.completions[start : start + batch_size], max_length), model)
        seen: list[torch.Tensor] = []
        handle = block.register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
        try:
            model(**batch)
        finally:
            handle.remove()
        yield seen[0], batch


def answer_inputs(
    model: torch.nn.Module, block: torch.nn.Module, tokenizer: Any, data: SeedingData, max_length: int, batch_size: int = 128,
    *, as_queries: bool = False,
) -> torch.Tensor:
    """(positions, dim): `block`'s input at the positions of `data`'s pairs that predict a completion token; with
    `as_queries`, what its keyed gate compares with its keys there (`ExpertMLP.key_queries`)."""
    rows = []
    for inputs, batch in level_passes(model, block, tokenizer, data, max_length, batch_size):
        scored = batch["labels"][:, 1:] != IGNORE
        inputs = block.key_queries(inputs, batch["attention_mask"]) if as_queries else inputs
        rows.append(inputs[:, :-1][scored].float().cpu())
    return torch.cat(rows) if rows else torch.zeros(0, 0)


def gate_open_rows(learner: TextSleepLearner, new_expert: tuple[int, int], data: SeedingData, batch_size: int = 128) -> list[int]:
    """The indices of `data`'s pairs whose scored outputs the new expert can change: its keyed gate opens at a position
    that predicts a completion token, or, below the last layer, where later layers' attention carries it, before one.
    On the other rows the student's scored outputs are exactly the slow model's, whatever the expert's weights, so
    KL(slow || student) there gives it no gradient."""
    level, expert = new_expert
    block, opened = learner.cms[level], []
    last_layer = block is learner.cms[-1]  # the CMS levels wrap the model's last MLPs: after this one, only the head
    for inputs, batch in level_passes(learner.model, block, learner.tokenizer, data, learner.config.max_length, batch_size):
        scored = batch["labels"][:, 1:] != IGNORE
        reach = scored if last_layer else scored.flip(-1).cummax(dim=-1).values.flip(-1)  # at or before a scored position
        opens = block.key_gate(expert, block.key_queries(inputs, batch["attention_mask"]))[:, :-1, 0] > 0
        opened += (opens & reach).any(dim=-1).tolist()
    return [i for i, row in enumerate(opened) if row]


def store_keys(learner: TextSleepLearner, new_expert: tuple[int, int], new: SeedingData, protect: SeedingData, experience: Any, seed: int) -> Metrics:
    """Give the new expert its keyed gate's keys: its level's key queries at the answer positions of the new pairs, where
    it is taught (the level's input does not depend on the expert, so they stay its queries there as it trains).
    Logged: how many are stored, and the share of answer positions the gate leaves open on (up to 64 of)
    protection's rows and on the experience's dev questions."""
    level, expert = new_expert
    block, model, max_length = learner.cms[level], learner.model, learner.config.max_length
    stored = block.store_keys(expert, answer_inputs(model, block, learner.tokenizer, new, max_length, as_queries=True), torch.Generator().manual_seed(seed))
    dev = dev_rows(experience)
    probes = {
        "protect": protect.take(pick(len(protect.prompts), min(64, len(protect.prompts)), seed)),
        "dev": SeedingData([r["prompt"] for r in dev], [r["prompt"] for r in dev], [r["answer"] for r in dev]),
    }
    metrics = {"keys": float(stored)}
    for name, data in probes.items():
        if data.prompts:
            queries = answer_inputs(model, block, learner.tokenizer, data, max_length, as_queries=True)
            metrics[f"key_gate_open_{name}"] = float(block.key_gate(expert, queries.to(block.expert_keys)).mean())
    return metrics


def share(total: int, parts: int, index: int) -> int:
    """Part `index` of `total` split into `parts` near-equal integers."""
    return total // parts + (index < total % parts)


def question_of(text: str) -> str:
    """The question in a teacher's "{question} A: {answer}" after "{passage} Q:" ("" when it wrote none)."""
    question, marker, _ = text.partition("A:")
    question = question.strip()
    return question if marker and question.endswith("?") else ""


def kept_questions(data: SeedingData, wanted: int, seed: int) -> list[str]:
    """`wanted` distinct closed-book prompts ("Q: ... A:", one line each) of the teacher's own QA, a seeded choice."""
    questions = list(dict.fromkeys(" ".join(p.split()) for p in data.prompts if closed_book(p)))
    return [questions[i] for i in pick(len(questions), min(wanted, len(questions)), seed)]


def pick(count: int, wanted: int, seed: int) -> list[int]:
    """`wanted` indices into `count` items: a seeded permutation, repeated as needed."""
    if not count:
        return []
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    return (order * (wanted // count + 1))[:wanted]


def imitation_targets(data: SeedingData, fraction: float) -> tuple[list[str], list[str]]:
    """GRPO's (prefix, target): a question's prompt and the teacher's answer; a restatement split at `fraction` of its words."""
    prefixes, targets = [], []
    for prompt, completion in zip(data.prompts, data.completions):
        prefix, target = (prompt, completion) if closed_book(prompt) else split_words(f"{prompt} {completion}", fraction)
        prefixes.append(prefix)
        targets.append(target)
    return prefixes, targets


def supervised_steps(
    learner: TextSleepLearner, new: SeedingData, protect: SeedingData, slow: torch.nn.Module,
    steps: int, lr: float, batch_size: int, protect_share: float, seed: int,
    router: torch.nn.Module | None = None, route_weight: float = 0.0, route_on: str = "all",
    cues: SeedingData | None = None, cue_rows: int = 0,
) -> float:
    """Sequence-level distillation of the new knowledge, protected: each Adam step's loss is
    (1 - protect_share) x the completion loss on `batch_size` teacher samples + protect_share x KL(slow || student)
    on as many of the slow model's own generations (and `cue_rows` of the `cues`' pairs, in the same batch), so
    the new expert learns the new answers and, in the same step, to leave what the slow model says alone;
    + route_weight x `routing_loss` of the new expert's router (`router`) on both batches' rows (`route_on`
    "questions": their closed-book questions only). Returns the last loss."""
    model, tokenizer, max_length = learner.model, learner.tokenizer, learner.config.max_length
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    new_rows = step_rows([(new, batch_size, seed)], steps)
    protect_rows = step_rows([(protect, batch_size, seed + 1)] + ([(cues, cue_rows, seed + 2)] if cues is not None else []), steps)
    share = protect_share if any(protect_rows) else 0.0
    model.train()
    loss = torch.zeros(())
    for step in range(steps if new.prompts else 0):
        picked = [new_rows[step]] + ([protect_rows[step]] if share else [])  # a source with pairs gives rows every step
        batches = [encode_pairs(tokenizer, [p for p, _ in rows], [c for _, c in rows], max_length) for rows in picked]
        with recorded_outputs(router) if route_weight and router is not None else nullcontext([]) as gate_logits:
            loss = (1 - share) * model(**batches[0]).loss
            if len(batches) > 1:
                with torch.no_grad():
                    target = scored_log_probs(slow, batches[1])
                loss = loss + share * kl_divergence(target, scored_log_probs(model, batches[1]))
        if gate_logits:
            routed = [torch.tensor([route_on == "all" or closed_book(prompt) for prompt, _ in rows]) for rows in picked]
            loss = loss + route_weight * routing_loss(gate_logits, batches, routed)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return float(loss.detach())


def step_rows(sources: list[tuple[SeedingData, int, int]], steps: int) -> list[list[tuple[str, str]]]:
    """Each step's (prompt, completion) rows: from every (data, rows, seed) source, the next `rows` of a seeded order
    of its pairs (a source without pairs gives none)."""
    orders = [(data, rows, pick(len(data.prompts), steps * rows, seed)) for data, rows, seed in sources]
    return [
        [(data.prompts[i], data.completions[i]) for data, rows, order in orders for i in order[step * rows : (step + 1) * rows]]
        for step in range(steps)
    ]


def scored_gates(logits: torch.Tensor, batch: dict[str, torch.Tensor], rows: torch.Tensor | None = None) -> torch.Tensor:
    """A router's logits (rows, tokens, 1) at the positions that predict a scored token of an `encode_pairs` batch
    (of the rows where the boolean `rows` is true, when given)."""
    scored = batch["labels"][:, 1:] != IGNORE
    if rows is not None:
        scored = scored & rows[:, None]
    return logits[:, :-1, 0][scored.to(logits.device)]


def routing_loss(gate_logits: list[torch.Tensor], batches: list[dict[str, torch.Tensor]], rows: list[torch.Tensor]) -> torch.Tensor:
    """Binary cross-entropy of the new expert's router: open (1) on the first batch (new pairs), shut (0) on the
    second (protection rows), at the scored positions of each batch's `rows` (boolean per row), each batch
    averaged on its own so the two weigh the same. Zero when no position is routed."""
    terms = [
        F.binary_cross_entropy_with_logits(gates, torch.full_like(gates, float(index == 0)))
        for index, (logits, batch, chosen) in enumerate(zip(gate_logits, batches, rows))
        if (gates := scored_gates(logits, batch, chosen)).numel()
    ]
    return torch.stack(terms).mean() if terms else gate_logits[0].sum() * 0.0


@torch.no_grad()
def router_openness(model: torch.nn.Module, router: torch.nn.Module, tokenizer: Any, data: SeedingData, max_length: int, seed: int, rows: int = 64) -> float:
    """The router's mean gate at the scored positions of (a seeded choice of) `rows` of `data`'s pairs (nan: no pairs)."""
    chosen = pick(len(data.prompts), min(rows, len(data.prompts)), seed)
    if not chosen:
        return float("nan")
    batch = encode_pairs(tokenizer, [data.prompts[i] for i in chosen], [data.completions[i] for i in chosen], max_length)
    with recorded_outputs(router) as gate_logits:
        model(**on_device(batch, model))
    return float(torch.sigmoid(scored_gates(gate_logits[0], batch)).mean())


def dev_scores(learner: TextSleepLearner, teacher: torch.nn.Module | None, experience: Any, when: str) -> Metrics:
    """Exact match on the experience's dev questions: the student's (closed-book) `when`, and the teacher's
    with its fast memory (the "in fast memory" ceiling) when given. Never a test probe."""
    student = learner.dev_exact_match(experience)
    if student is None:
        return {}
    scores = {f"student_dev_em_{when}": student}
    if teacher is not None:
        scores["teacher_dev_em"] = learner.dev_exact_match(experience, teacher, lambda r: learner.fast_memory.teacher_prompt(r["prompt"], r.get("context", "")))
    return scores


def split_words(text: str, fraction: float) -> tuple[str, str]:
    """(the first `fraction` of the words, at least one; the rest): a prefix to complete and its target."""
    words = text.split()
    cut = max(1, int(len(words) * fraction))
    return " ".join(words[:cut]), " ".join(words[cut:])
