"""The text `dreaming` sleep stage (PAPERS.md, "Language Models Need Sleep" / SEAL): the model writes its own rehearsal data.

Any text learner can host it (`seal` is fine-tuning + this stage; `sleep` adds it after knowledge seeding).

For the experience just woken on (context C = its passages; metric tau = minus the
answer NLL per token of its reward probes — the questions of the experience's dev split
(`experience.dev`: paraphrases the curriculum never uses for test probes), like SEAL's
per-passage questions, or its passages when it has no dev split; test probes are never
read), one ReST-EM round is:
  1. dream: m samples ~ LM(. | prompt) per passage, where `prompt` is a template over
     the passage ("{passage} Q:" asks for a question about it, SEAL's self-edit;
     "{opening}" cues a rehearsal from its first words; "Q:" alone asks for any QA
     line). The default is SEAL's: a pretrained base reads "{passage} Q:" as its
     reading format and writes a question about the passage and its answer, so the
     dream is a closed-book QA line about the new people. Cued by "Q:" alone, the
     `world` base (never trained on a bare question cue) wrote QA-shaped lines about
     made-up people, and fitting them unlearned what it had read.
     With `random_expert`, each CMS router also sends every token to one random
     unlocked expert (novelty). A dream's text is the prompt's cue + the sample.
  2. gradient selection: score each dream by the gradient g_d of the SFT loss it
     induces on the model's parameters, scalarized as `gradient_score`:
     "alignment" (default) = <g_d, g_tau>, g_tau the gradient of the probes' loss, so
     the score is the first-order drop of the probe loss from one SGD step on the dream
     (divided by the step size) — a cheap predictor of the reward; "norm" = ||g_d||, how
     much the dream would teach at all (a dream the model already predicts scores ~0,
     but pure noise scores highest). Keep the top-k plus b
     random ones; without `gradient_selection`, k + b random ones.
  3. reward: each kept dream fine-tunes an isolated PEFT LoRA copy of the model as it
     went to sleep (the reference; LoRA on every CMS MLP and attention projection);
     reward = 1 if tau improves (the improvement is logged too) and, with
     `require_grounded`, the dream's answer is words of its passage. Judging every round
     against the same reference keeps the reward a fixed function of the dream, the
     E-step target of ReST-EM (each copy's LoRA init is seeded by the dream's text,
     so a dream sampled again in a later round earns the same reward). Copies are
     split across the ranks of a Ray Train sleep (resources.sleep.workers), else run
     as parallel Ray tasks when Ray has room for two or more, else one after
     another — with the same numbers every way.
  4. M-step: supervised fine-tuning of the generator (the model itself) on
     (prompt -> rewarded sample).
A dream is cued by a passage, or (`dream_about=sentence`) by one sentence of it, so that
the dreams of every unit ask about every fact a passage states. The rounds dream about the
first `max_passages` units. After them the model consolidates
by SFT on the last round's rewarded dreams (`consolidate=rewarded`), or (`every-passage`) on a
fresh dream about every unit of the experience from the generator the rounds trained,
as SEAL applies its self-edits to every passage once its policy is trained; with
`require_grounded` only the fresh dreams that pass the verifier are fitted. A second verifier,
`teacher=agree` (sleep only), asks the sleep's teacher each dream's question, reading as its fast
memory reads (the whole passage in context, or its store), and passes a dream only when the two
answers match: a dream stated about the passage need not be what the passage says
(`agree-unknown` also drops the dreams the student, asked closed-book, already answers so). With
`answers_only`, a QA dream is fitted as its question -> its answer, the loss on the answer as on
seeding's pairs, so a misspelt name in a dream's question is read but never learned to be written. Two more values
are diagnostics that bound what a self-edit can add, not learners: `dev-answers` fits the
experience's dev questions with their answers (a correct QA line per fact, what a perfect
self-edit generator would write; the dev split then no longer measures anything held out),
and `documents` fits the experience's documents alone for the same steps (the control for
the consolidation steps). With `rounds=0` the stage only consolidates. In a sleep whose knowledge
seeding ran first, `protect_share > 0` fits the consolidation as seeding fits the teacher's pairs:
minibatches of `batch_size`, each step's loss with that share on KL(slow || student) over the rows
seeding guarded, so that what the dreams teach the new expert does not rewrite what the slow
model says (unprotected, a larger step on them cost the later sleeps' teachers their reading). The experience's
dev exact match before and after the stage is logged. Every dream, its score, whether it
was kept, its reward, its improvement and whether it was consolidated go to `dreams.jsonl`
in the sleep's artifacts directory. No past raw data is used.
"""

from __future__ import annotations

import copy
import json
import re
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model

from somna.learners.base import Metrics, SleepContext, derive_seed
from somna.learners.shared.distributed import DataParallel
from somna.learners.stages import SleepStage
from somna.learners.text.encoding import answer_nll, encode_pairs, greedy_answers, sample_completions
from somna.learners.text.experts import novelty_routing
from somna.learners.text.learner import TextLearner, TextSleepContext, dev_rows, training_only
from somna.learners.text.rewards import answer_in_passage, exact_match, qa_parts
from somna.learners.text.seeding import SeedingData, question_of, supervised_steps
from somna.platform.registry import register_sleep_stage

LORA_TARGETS = "all-linear"  # PEFT: every linear layer but the LM head, whatever the base calls them
CONSOLIDATE = ("rewarded", "every-passage", "dev-answers", "documents")  # what the stage fits after its rounds
TEACHER_CHECKS = ("none", "agree", "agree-unknown")  # the verifiers a sleep's teacher can add
CONSOLIDATION_SALT = 13  # seeds the protected consolidation's row order


@dataclass
class ReSTEMDreamingOptions:
    """`learner.sleep.options.dreaming` of the text learners."""

    prompt: str = "{passage} Q:"  # template; {passage} = a passage of the experience, {opening} = its first `opening_words`
    opening_words: int = 1
    dreams_per_passage: int = 4
    max_passages: int = 4  # the units (passages or sentences) the rounds dream about
    dream_about: str = "passage"  # the unit a dream is cued by: a passage of the experience, or "sentence": each sentence of one
    top_k: int = 4
    random_keep: int = 2
    rounds: int = 2
    gradient_selection: bool = True
    gradient_score: str = "alignment"  # or "norm"
    random_expert: bool = True
    lora_rank: int = 4
    lora_steps: int = 4
    lora_lr: float = 1e-3  # gentle: a larger step on one short dream lowers tau whatever the dream says
    sft_steps_per_round: int = 10
    consolidation_steps: int = 8
    lr: float = 1e-3  # the text presets' wake step: larger full-model steps on a pretrained base unlearn it
    max_new_tokens: int = 32
    temperature: float = 1.0
    anchor_documents: bool = True  # M-step and consolidation batches also hold the experience's documents
    reward_tasks: bool = True  # LoRA copies as Ray tasks when Ray has >= 2 free CPUs
    require_grounded: bool = False  # reward only dreams whose answer is words of their passage (rewards.answer_in_passage)
    teacher: str = "none"  # "agree": a dream passes only when the sleep's teacher (fast memory) answers its question as it does; "agree-unknown": and the student, closed-book, does not
    consolidate: str = "rewarded"  # what the model fits after the rounds: the last round's rewarded dreams, or "every-passage": fresh dreams about every passage of the experience (SEAL's evaluation); diagnostics: "dev-answers", "documents"
    protect_share: float = 0.0  # > 0: consolidate in minibatches with this share of each step on KL(slow || student) over knowledge seeding's protection rows
    batch_size: int = 8  # rows per consolidation step when protect_share > 0 (else one batch of everything, as shipped)
    answers_only: bool = False  # consolidate a QA line as its question -> its answer (loss on the answer, as seeding's pairs), not as a whole line

    def __post_init__(self) -> None:
        if min(self.dreams_per_passage, self.max_passages, self.lora_rank, self.opening_words) < 1:
            raise ValueError("learner.sleep.options.dreaming: dreams_per_passage, max_passages, lora_rank, opening_words must be >= 1")
        if min(self.rounds, self.top_k, self.random_keep, self.lora_steps, self.sft_steps_per_round, self.consolidation_steps) < 0:
            raise ValueError("learner.sleep.options.dreaming: rounds, top_k, random_keep and the step counts must be >= 0")
        if self.temperature <= 0:
            raise ValueError(f"learner.sleep.options.dreaming.temperature must be > 0, got {self.temperature}")
        if self.dream_about not in ("passage", "sentence"):
            raise ValueError(f"learner.sleep.options.dreaming.dream_about must be passage or sentence, got {self.dream_about!r}")
        if self.teacher not in TEACHER_CHECKS:
            raise ValueError(f"learner.sleep.options.dreaming.teacher must be one of {', '.join(TEACHER_CHECKS)}, got {self.teacher!r}")
        if self.consolidate not in CONSOLIDATE:
            raise ValueError(f"learner.sleep.options.dreaming.consolidate must be one of {', '.join(CONSOLIDATE)}, got {self.consolidate!r}")
        if self.consolidate == "documents" and not self.anchor_documents:
            raise ValueError("learner.sleep.options.dreaming: consolidate=documents fits the experience's documents, so it needs anchor_documents=true")
        if not 0.0 <= self.protect_share < 1.0 or self.batch_size < 1:
            raise ValueError(f"learner.sleep.options.dreaming: protect_share must be in [0, 1) and batch_size >= 1, got {self.protect_share}, {self.batch_size}")
        if self.gradient_score not in ("alignment", "norm"):
            raise ValueError(f"learner.sleep.options.dreaming.gradient_score must be alignment or norm, got {self.gradient_score!r}")
        try:
            self.prompt.format(passage="", opening="")
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(f"learner.sleep.options.dreaming.prompt: only {{passage}} and {{opening}} may appear, got {self.prompt!r} ({error})") from None


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
    optimizer.zero_grad()
    model.eval()
    return float(loss.detach())


def loss_gradient(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The gradient of the model's loss on `batch`, flattened over every trainable parameter."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    gradients = torch.autograd.grad(model(**batch).loss, parameters, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(gradients, parameters)])


def gradient_scores(model: torch.nn.Module, tokenizer: Any, dreams: list[str], max_length: int, direction: torch.Tensor | None = None) -> list[float]:
    """Per dream: ||g_d||, or <g_d, direction> when a direction (the probes' loss gradient) is given."""
    scores = []
    for dream in dreams:
        gradient = loss_gradient(model, encode_pairs(tokenizer, [""], [dream], max_length))
        scores.append(float(gradient.norm() if direction is None else gradient @ direction))
    return scores


def select(scores: list[float], top_k: int, random_keep: int, generator: torch.Generator) -> list[int]:
    """Indices of the top-k scores plus `random_keep` others drawn at random (diversity)."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    top, rest = order[:top_k], order[top_k:]
    extra = [rest[i] for i in torch.randperm(len(rest), generator=generator)[:random_keep].tolist()]
    return top + extra


def task_score(model: torch.nn.Module, tokenizer: Any, probes: tuple[list[str], list[str]], max_length: int) -> float:
    """tau: minus the mean answer NLL per token on the sleep's own probes."""
    nll, tokens = answer_nll(model, tokenizer, *probes, max_length)
    return -nll / max(tokens, 1)


@dataclass(frozen=True)
class LoraTrial:
    """How one kept dream is judged: the probes, the reference's tau and the LoRA recipe."""

    probes: tuple[list[str], list[str]]
    tau_before: float
    rank: int
    steps: int
    lr: float
    max_length: int
    threads: int


def lora_improvement(reference: torch.nn.Module, tokenizer: Any, dream: str, seed: int, trial: LoraTrial) -> float:
    """tau after fine-tuning an isolated LoRA copy of `reference` on `dream`, minus tau before.

    Seeded (the LoRA A matrices are random) and run on `trial.threads` threads, so the
    same dream gets the same number in this process or in a Ray task."""
    torch.set_num_threads(trial.threads)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        lora = LoraConfig(r=trial.rank, lora_alpha=2 * trial.rank, target_modules=LORA_TARGETS, lora_dropout=0.0)
        copy_model = get_peft_model(copy.deepcopy(reference), lora)
        sft_steps(copy_model, encode_pairs(tokenizer, [""], [dream], trial.max_length), trial.steps, trial.lr)
    return task_score(copy_model, tokenizer, trial.probes, trial.max_length) - trial.tau_before


def lora_improvements(reference: torch.nn.Module, tokenizer: Any, dreams: list[str], seeds: list[int], trial: LoraTrial, use_ray: bool) -> list[float]:
    """`lora_improvement` of every dream: split across the ranks of a Ray Train sleep, else fanned out
    as Ray tasks when `use_ray` and Ray has room, else one after another."""
    ranks = DataParallel()
    if ranks.world_size > 1:
        (mine,) = ranks.shard(torch.arange(len(dreams)))
        local = [lora_improvement(reference, tokenizer, dreams[i], seeds[i], trial) for i in mine.tolist()]
        return ranks.gather(torch.tensor(local, dtype=torch.float64), len(dreams)).tolist()
    if use_ray and ray_has_room():
        import ray

        remote = ray.remote(num_cpus=1)(lora_improvement)
        reference_ref, tokenizer_ref, trial_ref = ray.put(reference), ray.put(tokenizer), ray.put(trial)
        return ray.get([remote.remote(reference_ref, tokenizer_ref, d, s, trial_ref) for d, s in zip(dreams, seeds)])
    threads = torch.get_num_threads()
    try:
        return [lora_improvement(reference, tokenizer, d, s, trial) for d, s in zip(dreams, seeds)]
    finally:
        torch.set_num_threads(threads)


def dream_seed(seed: int, dream: str) -> int:
    """The LoRA seed of a dream: a function of the run seed and the text alone, so the reward is too."""
    return derive_seed(seed, salt=zlib.crc32(dream.encode()))


def ray_has_room(min_cpus: float = 2.0) -> bool:
    """True inside a running Ray with at least `min_cpus` CPUs free (one task at a time gains nothing)."""
    import ray

    return ray.is_initialized() and ray.available_resources().get("CPU", 0.0) >= min_cpus


@dataclass
class DreamRecord:
    round: int
    passage: str
    prompt: str
    dream: str  # what the model trains on: the prompt's cue + the sample
    sample: str
    score: float = 0.0
    kept: bool = False
    reward: float = 0.0
    improvement: float = 0.0
    consolidated: bool = False  # fitted after the rounds
    document: str = ""  # the passage the unit (`passage`: it or one of its sentences) comes from
    teacher_answer: str = ""  # the teacher's answer to the dream's question, with a teacher's verifier
    student_answer: str = ""  # the student's closed-book answer to it when it was dreamed, with a teacher's verifier


def render_prompt(template: str, passage: str, opening_words: int) -> tuple[str, str]:
    """(what the generator is conditioned on, the cue that becomes part of the dream's text)."""
    opening = " ".join(passage.split()[:opening_words])
    return template.format(passage=passage, opening=opening), template.replace("{passage}", "").format(opening=opening).strip()


@register_sleep_stage("dreaming", modality="text")
class ReSTEMDreaming(SleepStage):
    """ReST-EM dreaming: sample dreams, select by gradient, reward through LoRA copies, fit the rewarded ones."""

    Options = ReSTEMDreamingOptions
    hooks = ("model", "tokenizer", "frozen_copy", "apply_pending_updates", "training_texts", "sleep_parameters", "dev_exact_match")

    def check_stages(self, stages: list[str]) -> None:
        if self.options.protect_share and "knowledge-seeding" not in stages[: stages.index("dreaming")]:
            raise ValueError("learner.sleep.options.dreaming.protect_share reads knowledge seeding's protection rows: knowledge-seeding must come before dreaming in learner.sleep.stages")

    def required_hooks(self) -> tuple[str, ...]:
        return self.hooks + (("fast_memory",) if self.options.teacher != "none" else ())  # the teacher reads as its fast memory does

    def __call__(self, learner: TextLearner, context: SleepContext) -> Metrics:
        opts = self.options
        learner.apply_pending_updates()  # wake's pending slow-block update lands first: dreams come from the whole woken model
        generator = learner.generator(context.index, salt=11)
        documents, probes = dream_context(context.experience)
        units = [(d, d) for d in documents] if opts.dream_about == "passage" else [(d, s) for d in documents for s in sentences(d)]
        passages = units[: opts.max_passages]
        reference = learner.frozen_copy()
        trial = LoraTrial(
            probes, task_score(reference, learner.tokenizer, probes, learner.config.max_length), opts.lora_rank, opts.lora_steps, opts.lora_lr,
            learner.config.max_length, torch.get_num_threads(),
        )
        anchors = learner.training_texts(context.experience) if opts.anchor_documents else []
        before = learner.dev_exact_match(context.experience)
        with training_only(learner.model, learner.sleep_parameters(context)):
            metrics, records, rewarded = self.dream(learner, context, generator, passages, probes, reference, trial, anchors)
            metrics |= self.consolidate(learner, context, generator, records, rewarded, units, anchors)
        if before is None:
            return metrics
        return metrics | {"student_dev_em_before": before, "student_dev_em_after": learner.dev_exact_match(context.experience)}

    def dream(
        self, learner: TextLearner, context: SleepContext, generator: torch.Generator, passages: list[tuple[str, str]],
        probes: tuple[list[str], list[str]], reference: torch.nn.Module, trial: LoraTrial, anchors: list[str],
    ) -> tuple[Metrics, list[DreamRecord], list[DreamRecord]]:
        """The ReST-EM rounds (see the module docstring): their metrics, every dream and the last round's rewarded ones."""
        opts = self.options
        records: list[DreamRecord] = []
        rewarded: list[DreamRecord] = []
        fractions = []
        for round_index in range(opts.rounds):
            batch = self.dream_round(learner, context, round_index, passages, generator)
            scores = self.selection_scores(learner, batch, probes)
            top_k = opts.top_k if opts.gradient_selection else 0
            kept = select(scores, top_k, opts.random_keep + opts.top_k - top_k, generator)
            seeds = [dream_seed(learner.seed, batch[i].dream) for i in kept]
            improvements = lora_improvements(reference, learner.tokenizer, [batch[i].dream for i in kept], seeds, trial, opts.reward_tasks)
            for record, score in zip(batch, scores):
                record.score = score
            for index, improvement in zip(kept, improvements):
                record = batch[index]
                record.kept, record.improvement, record.reward = True, improvement, float(improvement > 0 and self.verified(record))
            rewarded = [batch[i] for i in kept if batch[i].reward > 0]
            fractions.append(len(rewarded) / max(len(kept), 1))
            if rewarded:  # ReST-EM M-step: the generator imitates its rewarded samples
                fit(learner, [r.prompt for r in rewarded], [r.sample for r in rewarded], anchors, opts.sft_steps_per_round, opts.lr)
            records += batch
        kept_records = [r for r in records if r.kept]
        return {
            "dreams": float(len(records)),
            **{f"rewarded_fraction/round{i}": fraction for i, fraction in enumerate(fractions)},
            "mean_improvement": sum(r.improvement for r in kept_records) / max(len(kept_records), 1),
        }, records, rewarded

    def consolidate(
        self, learner: TextLearner, context: SleepContext, generator: torch.Generator, records: list[DreamRecord],
        rewarded: list[DreamRecord], units: list[tuple[str, str]], anchors: list[str],
    ) -> Metrics:
        """Fit what `consolidate` names: the last round's rewarded dreams, or (`every-passage`) a fresh round of
        dreams about every unit (passage or sentence) from the generator the rounds trained, as SEAL applies its self-edits
        (those that pass the verifier, with `require_grounded`); or a diagnostic's lines: the dev questions
        answered (`dev-answers`) or none, the experience's documents alone (`documents`)."""
        opts = self.options
        chosen = rewarded if opts.consolidate == "rewarded" else []
        if opts.consolidate == "every-passage":
            final = self.dream_round(learner, context, opts.rounds, units, generator)
            records, chosen = records + final, [record for record in final if self.verified(record)]
        for record in chosen:
            record.consolidated = True
        lines = [r.dream for r in chosen] + ([row["text"] for row in dev_rows(context.experience)] if opts.consolidate == "dev-answers" else [])
        fits = bool(lines) or opts.consolidate == "documents"
        prompts, completions = split_answers(lines) if opts.answers_only else ([""] * len(lines), lines)
        if not fits:
            loss = 0.0
        elif opts.protect_share:
            loss = protected_fit(learner, context, prompts + [""] * len(anchors), completions + anchors, opts)
        else:
            loss = fit(learner, prompts, completions, anchors, opts.consolidation_steps, opts.lr)
        write_dreams(context, records)
        return {"consolidated_dreams": float(len(lines)), "consolidation_loss": loss} | teacher_shares(records)

    def verified(self, record: DreamRecord) -> bool:
        """The verifiers beside the LoRA reward: with `require_grounded`, the dream must answer from its passage; with
        `teacher=agree`, the teacher must give its question the same answer; `agree-unknown` also needs a student that
        did not already answer so (a dream it knows teaches it nothing)."""
        grounded = not self.options.require_grounded or answer_in_passage(record.dream, record.passage)
        if self.options.teacher == "none":
            return grounded
        return grounded and teacher_agrees(record) and (self.options.teacher == "agree" or not student_knew(record))

    def ask_teacher(self, learner: TextLearner, context: TextSleepContext, records: list[DreamRecord]) -> None:
        """With a teacher's verifier, the sleep's teacher answers each dream's question greedily, reading as it read in
        wake (its fast memory's `teacher_prompt`: with the dream's passage in context, or nothing added), and so
        does the student as it is, closed-book."""
        if self.options.teacher == "none":
            return
        asked = [(record, f"Q: {question} A:") for record in records if (question := question_of(record.sample))]
        prompts = [learner.fast_memory.teacher_prompt(question, record.document) for record, question in asked]
        teacher = greedy_answers(context.teacher, learner.tokenizer, prompts, self.options.max_new_tokens)
        student = greedy_answers(learner.model, learner.tokenizer, [question for _, question in asked], self.options.max_new_tokens)
        for (record, _), by_teacher, by_student in zip(asked, teacher, student):
            record.teacher_answer, record.student_answer = by_teacher, by_student

    def selection_scores(self, learner: TextLearner, batch: list[DreamRecord], probes: tuple[list[str], list[str]]) -> list[float]:
        """Gradient scores of the round's dreams (zeros without gradient selection)."""
        if not self.options.gradient_selection:
            return [0.0] * len(batch)
        direction = None
        if self.options.gradient_score == "alignment":
            direction = loss_gradient(learner.model, encode_pairs(learner.tokenizer, *probes, learner.config.max_length))
        return gradient_scores(learner.model, learner.tokenizer, [r.dream for r in batch], learner.config.max_length, direction)

    def dream_round(
        self, learner: TextLearner, context: SleepContext, round_index: int, units: list[tuple[str, str]], generator: torch.Generator,
    ) -> list[DreamRecord]:
        """Sample `dreams_per_passage` dreams per (document, unit) (with novelty routing if `random_expert`), and the
        teacher's answers to their questions when it verifies them."""
        opts = self.options
        cues = [(d, u, *render_prompt(opts.prompt, u, opts.opening_words)) for d, u in units for _ in range(opts.dreams_per_passage)]
        prompts = [prompt for _, _, prompt, _ in cues]
        if opts.random_expert:
            with novelty_routing(learner.model, generator):
                samples = sample_texts(learner, prompts, opts.max_new_tokens, generator, opts.temperature)
        else:
            samples = sample_texts(learner, prompts, opts.max_new_tokens, generator, opts.temperature)
        records = [
            DreamRecord(round_index, unit, prompt, f"{cue} {sample}".strip(), sample, document=document)
            for (document, unit, prompt, cue), sample in zip(cues, samples)
            if sample.strip()
        ]
        self.ask_teacher(learner, context, records)
        return records


def fit(learner: TextLearner, prompts: list[str], completions: list[str], anchors: list[str], steps: int, lr: float) -> float:
    """SFT of the learner's model on (prompt -> completion) pairs, next to the experience's own documents when anchored."""
    batch = encode_pairs(learner.tokenizer, prompts + [""] * len(anchors), completions + anchors, learner.config.max_length)
    return sft_steps(learner.model, batch, steps, lr)


def protected_fit(learner: TextLearner, context: TextSleepContext, prompts: list[str], completions: list[str], opts: ReSTEMDreamingOptions) -> float:
    """Fit (prompt -> completion) pairs as knowledge seeding fits its new pairs (seeding.supervised_steps): `batch_size` of
    them a step, with `protect_share` of the loss on KL(slow || student) over the protection rows seeding guarded in this sleep."""
    new = SeedingData(prompts, prompts, completions)
    seed = derive_seed(learner.seed, context.index, CONSOLIDATION_SALT)
    return supervised_steps(learner, new, context.protection, context.slow, opts.consolidation_steps, opts.lr, opts.batch_size, opts.protect_share, seed)


def teacher_agrees(record: DreamRecord) -> bool:
    parts = qa_parts(record.dream)
    return bool(record.teacher_answer and parts) and exact_match(parts[1], record.teacher_answer)


def student_knew(record: DreamRecord) -> bool:
    return bool(record.teacher_answer) and exact_match(record.student_answer, record.teacher_answer)


def teacher_shares(records: list[DreamRecord]) -> Metrics:
    """Of a sleep's dreams the teacher answered: the share it agrees with, and of those, the share the student knew
    already (closed-book, when dreamed): what a teacher-verified dream can still teach. Empty without a teacher's verifier."""
    asked = [r for r in records if r.teacher_answer]
    agreed = [r for r in asked if teacher_agrees(r)]
    if not asked:
        return {}
    return {"teacher_agrees": len(agreed) / len(asked), "student_knew": sum(map(student_knew, agreed)) / max(len(agreed), 1)}


def split_answers(lines: list[str]) -> tuple[list[str], list[str]]:
    """(prompts, completions): a QA line "Q: question A: answer" as ("Q: question A:", "answer"), so only its answer is
    a target (a misspelt name in a dream's question is then read, never learned to be written); other lines whole."""
    pairs = [parts if (parts := qa_parts(line)) and parts[0] != "A:" and parts[1] else ("", line) for line in lines]
    return [p for p, _ in pairs], [c for _, c in pairs]


def sample_texts(learner: TextLearner, prompts: list[str], max_new_tokens: int, generator: torch.Generator, temperature: float = 1.0) -> list[str]:
    """Sampled continuations of "<s>prompt" (up to </s>), seeded by `generator`."""
    seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
    return sample_completions(learner.model, learner.tokenizer, prompts, max_new_tokens, seed, temperature)


def sentences(passage: str) -> list[str]:
    """The passage's sentences (each up to its closing . ! or ?), the unit `dream_about=sentence` cues dreams with."""
    return [sentence.strip() for sentence in re.findall(r"[^.!?]+[.!?]*", passage) if sentence.strip()]


def dream_context(experience: Any) -> tuple[list[str], tuple[list[str], list[str]]]:
    """(passages to dream from, tau's probes): the experience's documents; its dev questions, else the passages."""
    documents = [row for row in experience.train if not row["prompt"]] or list(experience.train)
    passages = [row["text"] for row in documents]
    dev = dev_rows(experience)
    if dev:
        return passages, ([r["prompt"] for r in dev], [r["answer"] for r in dev])
    return passages, ([""] * len(passages), passages)


def write_dreams(context: SleepContext, records: list[DreamRecord]) -> None:
    """Write this sleep's dreams to dreams.jsonl, for a researcher to read what the model dreamed.

    One sleep per experience directory: an experience redone after a crash replaces its file."""
    if context.artifacts_dir is None:
        return
    path = Path(context.artifacts_dir) / "dreams.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        for record in records:
            handle.write(json.dumps({"experience": context.index, **asdict(record)}) + "\n")
