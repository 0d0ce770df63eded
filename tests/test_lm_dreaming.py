"""Dreaming: gradient selection, novelty routing only while dreaming, rewards, ReST-EM moves the generator to rewarded dreams."""

from __future__ import annotations

import copy
import json
from statistics import fmean

import pytest
import torch

import somna.learners.text.dreaming as dreaming
from somna.learners.base import SleepContext
from somna.learners.text.encoding import answer_nll, encode_pairs, kl_divergence, scored_log_probs
from somna.learners.text.model import SleepLM, SleepLMConfig
from somna.learners.text.rewards import answer_in_passage
from somna.learners.text.seeding import GKDSeeding
from somna.learners.text.tokenizer import NUM_BYTES, SPECIALS, train_tokenizer
from somna.platform.builders import build_curriculum, build_learner
from somna.platform.config import ConfigError, load_config
from somna.platform.launch import check_buildable
from somna.platform.registry import LEARNERS


def build_byte_tokenizer():
    return train_tokenizer(["no merges"], len(SPECIALS) + NUM_BYTES)


def tiny_model() -> SleepLM:
    torch.manual_seed(0)
    return SleepLM(SleepLMConfig(vocab_size=len(SPECIALS) + NUM_BYTES, dim=32, num_heads=2, num_layers=1, max_positions=64))


def micro_seal(seed: int = 0, *overrides: str):
    """A micro-preset seal learner that has woken on its first experience."""
    cfg = load_config("fact-stream-micro", ["learner=seal", f"seed={seed}", "learner.epochs=20", *overrides])
    curriculum = build_curriculum(cfg)
    learner = build_learner(cfg, curriculum.info)
    learner.wake(curriculum[0])
    return learner, curriculum


def test_select_keeps_the_top_scores_plus_random_others():
    scores = [0.1, 5.0, 3.0, 0.2, 4.0]
    generator = torch.Generator().manual_seed(0)
    assert dreaming.select(scores, top_k=2, random_keep=0, generator=generator) == [1, 4]
    kept = dreaming.select(scores, top_k=2, random_keep=2, generator=generator)
    assert kept[:2] == [1, 4] and len(set(kept)) == 4 and set(kept[2:]) <= {0, 2, 3}


def test_gradient_norm_is_small_for_a_dream_the_model_already_knows():
    tokenizer, model = build_byte_tokenizer(), tiny_model()
    known = "mila eats plums."
    dreaming.sft_steps(model, encode_pairs(tokenizer, [""], [known], 64), steps=60, lr=1e-2)
    known_score, novel_score = dreaming.gradient_scores(model, tokenizer, [known, "zq vx kk pt"], 64)
    assert known_score < novel_score / 5
    assert dreaming.select([known_score, novel_score], top_k=1, random_keep=0, generator=torch.Generator()) == [1]


def test_alignment_score_is_the_first_order_drop_of_the_probe_loss():
    """<g_dream, g_probe> = (L_probe(theta) - L_probe(theta - eta g_dream)) / eta as eta -> 0; the on-topic dream wins."""
    tokenizer, model = build_byte_tokenizer(), tiny_model().double()
    probes = (["Q: what does mila eat? A:"], ["plums"])
    dreams = ["Q: what does mila eat? A: plums", "the sky over vora is wide."]
    probe_batch = encode_pairs(tokenizer, *probes, 64)
    direction = dreaming.loss_gradient(model, probe_batch)
    scores = dreaming.gradient_scores(model, tokenizer, dreams, 64, direction)
    eta = 1e-6
    for dream, score in zip(dreams, scores):
        step = dreaming.loss_gradient(model, encode_pairs(tokenizer, [""], [dream], 64))
        moved = tiny_model().double()
        moved.load_state_dict(model.state_dict())
        torch.nn.utils.vector_to_parameters(torch.nn.utils.parameters_to_vector(model.parameters()) - eta * step, moved.parameters())
        with torch.no_grad():
            drop = (model(**probe_batch).loss - moved(**probe_batch).loss) / eta
        assert float(drop) == pytest.approx(score, rel=1e-3)
    assert dreaming.select(scores, top_k=1, random_keep=0, generator=torch.Generator()) == [0]


def test_prompt_templates_condition_on_the_passage_and_keep_the_cue():
    passage = "tone lives in bide. tone eats rice."
    assert dreaming.render_prompt("Q:", passage, 1) == ("Q:", "Q:")
    assert dreaming.render_prompt("{passage} Q:", passage, 1) == (f"{passage} Q:", "Q:")
    assert dreaming.render_prompt("{opening}", passage, 2) == ("tone lives", "tone lives")
    with pytest.raises(ValueError, match="prompt"):
        dreaming.ReSTEMDreamingOptions(prompt="{answer}")


def test_the_reward_probes_are_the_dev_questions_never_the_test_ones():
    learner, curriculum = micro_seal(0)
    experience = curriculum[0]
    passages, probes = dreaming.dream_context(experience)
    assert probes == (experience.dev["prompt"], experience.dev["answer"]) and probes[0]
    assert not set(probes[0]) & set(experience.test["prompt"])  # tau never reads experience.test
    assert passages == experience.train["text"] == learner.training_texts(experience)


def test_dream_logs_every_dream_and_the_m_step_fits_the_rewarded_ones(tmp_path, monkeypatch):
    learner, curriculum = micro_seal(0, "learner.lr=0.01")
    monkeypatch.setattr(dreaming, "lora_improvements", lambda reference, tokenizer, dreams, *args: [1.0] * len(dreams))
    before = {k: v.clone() for k, v in learner.model.state_dict().items()}
    stage = dreaming.ReSTEMDreaming.with_options(top_k=2, random_keep=1, rounds=1, max_new_tokens=16, consolidation_steps=0)
    metrics = stage(learner, SleepContext(curriculum[0], 2, seed=0, artifacts_dir=tmp_path))
    records = [json.loads(line) for line in (tmp_path / "dreams.jsonl").read_text().splitlines()]
    kept = [r for r in records if r["kept"]]
    assert len(records) == metrics["dreams"] and len(kept) == 3 and all(r["reward"] == 1.0 for r in kept)
    assert metrics["rewarded_fraction/round0"] == 1.0
    passages = set(curriculum[0].train["text"])
    assert all(r["prompt"] == f"{r['passage']} Q:" and r["passage"] in passages for r in records)  # SEAL's self-edit prompt
    assert all(r["dream"] == f"Q: {r['sample']}" for r in records)  # the dream keeps the cue "Q:", not the passage
    rewarded = ([r["prompt"] for r in kept], [r["sample"] for r in kept])
    after_nll = answer_nll(learner.model, learner.tokenizer, *rewarded, 128)[0]
    learner.model.load_state_dict(before)
    assert after_nll < answer_nll(learner.model, learner.tokenizer, *rewarded, 128)[0]  # the M-step fitted them


def test_require_grounded_rewards_only_dreams_that_answer_from_their_passage(tmp_path, monkeypatch):
    """Every LoRA trial says "improved"; the verifier then decides, dream by dream."""
    learner, curriculum = micro_seal(0)
    monkeypatch.setattr(dreaming, "lora_improvements", lambda reference, tokenizer, dreams, *args: [1.0] * len(dreams))
    stage = dreaming.ReSTEMDreaming.with_options(rounds=1, max_new_tokens=16, require_grounded=True, sft_steps_per_round=0, consolidation_steps=0)
    stage(learner, SleepContext(curriculum[0], 2, seed=0, artifacts_dir=tmp_path))
    kept = [r for r in map(json.loads, (tmp_path / "dreams.jsonl").read_text().splitlines()) if r["kept"]]
    grounded = [answer_in_passage(r["dream"], r["passage"]) for r in kept]
    assert [r["reward"] for r in kept] == [float(g) for g in grounded]
    assert not all(grounded)  # some dream was refused


def test_every_passage_consolidation_fits_the_verified_dreams_about_every_passage(tmp_path, monkeypatch):
    """consolidate=every-passage: the rounds dream about `max_passages` passages; the stage then dreams once more about
    every passage of the experience and fits exactly the fresh dreams that pass the verifier, none of the rounds' own."""
    learner, curriculum = micro_seal(0)
    monkeypatch.setattr(dreaming, "lora_improvements", lambda reference, tokenizer, dreams, *args: [1.0] * len(dreams))
    fitted: list[list[str]] = []
    monkeypatch.setattr(dreaming, "fit", lambda learner, prompts, completions, *args: fitted.append(list(completions)) or 0.0)
    options = {"rounds": 1, "max_passages": 1, "max_new_tokens": 16, "require_grounded": True, "anchor_documents": False}
    metrics = dreaming.ReSTEMDreaming.with_options(consolidate="every-passage", **options)(learner, SleepContext(curriculum[0], 2, seed=0, artifacts_dir=tmp_path))
    records = [json.loads(line) for line in (tmp_path / "dreams.jsonl").read_text().splitlines()]
    rounds, final = [r for r in records if r["round"] == 0], [r for r in records if r["round"] == 1]
    passages = curriculum[0].train["text"]
    assert {r["passage"] for r in rounds} == {passages[0]} and {r["passage"] for r in final} == set(passages) and len(passages) == 2
    consolidated = [r["dream"] for r in final if r["consolidated"]]
    assert consolidated == [r["dream"] for r in final if answer_in_passage(r["dream"], r["passage"])] and 0 < len(consolidated) < len(final)
    assert fitted[-1] == consolidated and metrics["consolidated_dreams"] == len(consolidated)
    assert not any(r["consolidated"] for r in rounds)
    assert 0 <= metrics["student_dev_em_before"] <= 1 and 0 <= metrics["student_dev_em_after"] <= 1  # dev questions, logged around the stage


def test_rewarded_consolidation_marks_the_last_rounds_rewarded_dreams(tmp_path, monkeypatch):
    learner, curriculum = micro_seal(0)
    monkeypatch.setattr(dreaming, "lora_improvements", lambda reference, tokenizer, dreams, *args: [float(len(d) % 2) for d in dreams])
    metrics = dreaming.ReSTEMDreaming.with_options(rounds=2, max_new_tokens=16, sft_steps_per_round=0, consolidation_steps=0)(learner, SleepContext(curriculum[0], 2, seed=0, artifacts_dir=tmp_path))
    records = [json.loads(line) for line in (tmp_path / "dreams.jsonl").read_text().splitlines()]
    rewarded_last = [r["dream"] for r in records if r["round"] == 1 and r["reward"] > 0]
    assert sorted(r["dream"] for r in records if r["consolidated"]) == sorted(rewarded_last) and metrics["consolidated_dreams"] == len(rewarded_last) > 0


@pytest.mark.parametrize("consolidate", ["dev-answers", "documents"])
def test_diagnostic_consolidation_fits_the_dev_answers_or_the_documents_alone(tmp_path, monkeypatch, consolidate):
    """rounds=0 dreams nothing; `dev-answers` fits each dev question with its answer beside the documents,
    `documents` the documents alone, for the same steps (the bound and the control of the dreaming table)."""
    learner, curriculum = micro_seal(0)
    experience = curriculum[0]
    fitted: list[tuple[list[str], list[str]]] = []
    monkeypatch.setattr(dreaming, "fit", lambda learner, prompts, completions, anchors, *args: fitted.append((list(completions), list(anchors))) or 0.0)
    metrics = dreaming.ReSTEMDreaming.with_options(rounds=0, consolidate=consolidate)(learner, SleepContext(experience, 2, seed=0, artifacts_dir=tmp_path))
    dev_lines = [row["prompt"] + " " + row["answer"] for row in experience.dev] if consolidate == "dev-answers" else []
    assert fitted == [(dev_lines, learner.training_texts(experience))] and metrics["consolidated_dreams"] == len(dev_lines)
    assert metrics["dreams"] == 0 and (tmp_path / "dreams.jsonl").read_text() == ""  # no dream was sampled or written
    assert consolidate == "documents" or all(line.startswith("Q: ") for line in dev_lines) and len(dev_lines) == len(experience.dev) > 0


def test_dream_about_sentence_cues_a_dream_with_every_sentence_of_every_passage(tmp_path, monkeypatch):
    learner, curriculum = micro_seal(0)
    monkeypatch.setattr(dreaming, "fit", lambda *args: 0.0)
    monkeypatch.setattr(dreaming, "sample_texts", lambda learner, prompts, *args: ["what? A: x"] * len(prompts))
    options = {"rounds": 0, "dreams_per_passage": 1, "consolidate": "every-passage", "dream_about": "sentence"}
    dreaming.ReSTEMDreaming.with_options(**options)(learner, SleepContext(curriculum[0], 2, seed=0, artifacts_dir=tmp_path))
    cued = {json.loads(line)["passage"] for line in (tmp_path / "dreams.jsonl").read_text().splitlines()}
    passages = curriculum[0].train["text"]
    assert " ".join(passages) == " ".join(sorted(cued, key=lambda s: " ".join(passages).index(s)))  # every sentence, nothing else
    assert len(cued) > len(passages) and all(sentence.endswith(".") for sentence in cued)


def test_consolidate_takes_only_its_values():
    with pytest.raises(ValueError, match="consolidate must be one of rewarded, every-passage, dev-answers, documents"):
        dreaming.ReSTEMDreamingOptions(consolidate="all")
    with pytest.raises(ValueError, match="consolidate=documents .* needs anchor_documents=true"):
        dreaming.ReSTEMDreamingOptions(consolidate="documents", anchor_documents=False)
    with pytest.raises(ValueError, match="dream_about must be passage or sentence"):
        dreaming.ReSTEMDreamingOptions(dream_about="word")


@pytest.mark.learned
def test_rest_em_raises_the_rewarded_fraction_over_two_rounds():
    """Same woken learner, same first round; only the M-step differs. Real LoRA rewards throughout.

    Rewards are a function of the dream's text (fixed reference, text-seeded LoRA), so a
    generator fitted to its rewarded dreams writes more of them. One seed rewards only 6 kept
    dreams a round, and its first round can already be 6 of 6 (seed 0 under AVX2), so the
    claim is pooled over seeds 0-4. Measured under each CPU kernel set (default, avx2,
    avx512): round 1 with the M-step 0.90-1.00 against 0.47-0.60 for both round 0 and the control."""
    options = {"prompt": "Q:", "rounds": 2, "max_new_tokens": 24, "lr": 0.01}
    first, with_m_step, control = [], [], []
    for seed in range(5):
        learner, curriculum = micro_seal(seed)
        twin = copy.deepcopy(learner)
        for m_steps, model, rounds in ((30, learner, with_m_step), (0, twin, control)):
            metrics = dreaming.ReSTEMDreaming.with_options(sft_steps_per_round=m_steps, **options)(model, SleepContext(curriculum[0], 2, seed=seed))
            rounds.append(metrics["rewarded_fraction/round1"])
            first.append(metrics["rewarded_fraction/round0"])
    assert first[0::2] == first[1::2]  # the two arms share round 0
    assert fmean(with_m_step) > fmean(first) + 0.25 and fmean(with_m_step) > fmean(control) + 0.25


def test_lora_rewards_are_the_same_as_parallel_ray_tasks(ray_session):
    learner, curriculum = micro_seal(0)
    _, probes = dreaming.dream_context(curriculum[0])
    trial = dreaming.LoraTrial(probes, dreaming.task_score(learner.model, learner.tokenizer, probes, 128), 4, 4, 1e-3, 128, 1)
    dreams = ["Q: what is it? A: red", "zonu eats rice.", "Q: who? A: pira"]
    seeds = [dreaming.dream_seed(0, d) for d in dreams]
    assert dreaming.ray_has_room()
    in_ray = dreaming.lora_improvements(learner.model, learner.tokenizer, dreams, seeds, trial, True)
    here = dreaming.lora_improvements(learner.model, learner.tokenizer, dreams, seeds, trial, False)
    assert in_ray == here and len(set(here)) == 3


def test_dreaming_learners_are_registered_for_text():
    assert {"text"} <= set(LEARNERS.modalities("seal")) and {"text"} <= set(LEARNERS.modalities("finetune-no-dream"))


def test_unknown_dreaming_option_is_a_one_line_error():
    with pytest.raises(ValueError, match="unknown option.*bogus"):
        dreaming.ReSTEMDreaming.with_options(bogus=1)


def seeded_micro_sleep():
    """A micro sleep learner in its first sleep, after expansion and knowledge seeding: (learner, context, experience)."""
    cfg = load_config("fact-stream-micro", ["seed=0"])
    curriculum = build_curriculum(cfg)
    learner = build_learner(cfg, curriculum.info)
    learner.wake(curriculum[0])
    context = learner.begin_sleep(SleepContext(curriculum[0], len(curriculum), seed=0))
    learner.sleep_stages["expansion"](learner, context)
    GKDSeeding.with_options(steps=10, questions_per_passage=2, num_prompts=4, protect_prompts=32, batch_size=2, max_new_tokens=8)(learner, context)
    return learner, context, curriculum[0]


@pytest.mark.learned
def test_protected_consolidation_keeps_the_slow_models_outputs_on_seedings_protection_rows():
    """protect_share > 0 fits the dreams beside the rows knowledge seeding guarded (KL to the slow model): at a step
    large enough to move the new expert, the student stays closer to the slow model on those rows than the same
    minibatch steps without protection leave it, and it still learns the fitted lines."""
    learner, context, experience = seeded_micro_sleep()
    protect = context.protection
    assert protect is not None and len(protect.prompts) > 8
    lines = list(experience.train["text"])  # stand-ins for the dreams: the experience's passages
    rows = encode_pairs(learner.tokenizer, protect.prompts, protect.completions, 64)
    fitted = encode_pairs(learner.tokenizer, [""] * len(lines), lines, 64)
    trainable = learner.sleep_parameters(context)
    seeded = [p.detach().clone() for p in trainable]

    def consolidated(share: float) -> tuple[float, float]:
        """(KL(slow || student) on the protection rows, the loss on the fitted lines) after consolidating from `seeded`."""
        with torch.no_grad():
            for parameter, value in zip(trainable, seeded):
                parameter.copy_(value)
        options = dreaming.ReSTEMDreamingOptions(protect_share=share, consolidation_steps=30, lr=0.05, batch_size=4)
        with dreaming.training_only(learner.model, trainable):
            dreaming.protected_fit(learner, context, [""] * len(lines), lines, options)
        with torch.no_grad():
            return float(kl_divergence(scored_log_probs(context.slow, rows), scored_log_probs(learner.model, rows))), float(learner.model(**fitted).loss)

    with torch.no_grad():
        before = float(learner.model(**fitted).loss)
    (protected, learned), (unprotected, _) = consolidated(0.8), consolidated(0.0)
    assert protected < 0.5 * unprotected
    assert learned < before  # the lines were still learned


def test_protected_consolidation_needs_knowledge_seeding_before_dreaming():
    for overrides in (["learner=seal"], ["learner.sleep.stages=[expansion,dreaming,knowledge-seeding]"]):
        with pytest.raises(ConfigError, match="protect_share reads knowledge seeding's protection rows") as error:
            check_buildable(load_config("fact-stream-micro", [*overrides, "learner.sleep.options.dreaming.protect_share=0.5"]))
        assert "\n" not in str(error.value)
    check_buildable(load_config("fact-stream-micro", ["learner.sleep.stages=[expansion,knowledge-seeding,dreaming]", "learner.sleep.options.dreaming.protect_share=0.5"]))
    with pytest.raises(ValueError, match="protect_share must be in"):
        dreaming.ReSTEMDreamingOptions(protect_share=1.0)


@pytest.mark.parametrize("check", ["agree", "agree-unknown"])
def test_teacher_agreement_fits_only_the_dreams_the_teacher_answers_alike(tmp_path, monkeypatch, check):
    """dreaming.teacher=agree: the sleep's teacher is asked each dream's question as its fast memory reads (here the
    whole passage the sentence came from, in context) and a dream is fitted only when the answers match;
    agree-unknown also drops the dreams the student, asked closed-book, already answered so."""
    cfg = load_config("fact-stream-micro", ["seed=0"])
    curriculum = build_curriculum(cfg)
    learner = build_learner(cfg, curriculum.info)
    learner.wake(curriculum[0])
    context = learner.begin_sleep(SleepContext(curriculum[0], len(curriculum), seed=0, artifacts_dir=tmp_path))
    samples = ["who is it? A: Ann", "who is it? A: Bob", "no question here"]
    monkeypatch.setattr(dreaming, "sample_texts", lambda learner, prompts, *args: [samples[i % 3] for i in range(len(prompts))])
    asked: dict[str, list[str]] = {}

    def answers(model: torch.nn.Module, tokenizer, prompts: list[str], *args) -> list[str]:
        if model is context.teacher:
            asked["teacher"] = prompts
            return ["ann."] * len(prompts)
        asked["student"] = prompts
        return ["Ann" if i % 4 == 0 else "no idea" for i in range(len(prompts))]

    monkeypatch.setattr(dreaming, "greedy_answers", answers)
    fitted: list[list[str]] = []
    monkeypatch.setattr(dreaming, "fit", lambda learner, prompts, completions, *args: fitted.append(list(completions)) or 0.0)
    options = {"rounds": 0, "dreams_per_passage": 3, "consolidate": "every-passage", "dream_about": "sentence", "teacher": check}
    metrics = dreaming.ReSTEMDreaming.with_options(**options)(learner, context)
    records = [json.loads(line) for line in (tmp_path / "dreams.jsonl").read_text().splitlines()]
    questioned = [r for r in records if r["sample"] != samples[2]]
    assert asked["teacher"] == [learner.fast_memory.teacher_prompt("Q: who is it? A:", r["document"]) for r in questioned]
    assert asked["student"] == ["Q: who is it? A:"] * len(questioned)  # the student is asked closed-book
    assert all(r["passage"] in r["document"] and r["document"] in curriculum[0].train["text"] for r in records)
    assert all(r["document"] in prompt for r, prompt in zip(questioned, asked["teacher"]))  # the teacher reads the passage, not the sentence
    agreed = [r for r in records if r["sample"] == samples[0]]  # Bob disagrees; no question, no answer
    knew = [r for r in agreed if r["student_answer"] == "Ann"]
    expected = [r["dream"] for r in agreed if check == "agree" or r not in knew]
    assert fitted == [[r["dream"] for r in records if r["consolidated"]]] and [r["dream"] for r in records if r["consolidated"]] == expected
    assert 0 < len(knew) < len(agreed) and set(expected) == {"Q: who is it? A: Ann"}
    assert all(r["teacher_answer"] == ("ann." if r in questioned else "") for r in records)
    assert metrics["teacher_agrees"] == len(agreed) / len(questioned) and metrics["student_knew"] == len(knew) / len(agreed)


def test_teacher_agreement_needs_a_learner_with_a_fast_memory():
    with pytest.raises(ConfigError, match="needs learner.fast_memory") as error:
        check_buildable(load_config("fact-stream-micro", ["learner=seal", "learner.sleep.options.dreaming.teacher=agree"]))
    assert "\n" not in str(error.value)
    check_buildable(load_config("fact-stream-micro", ["learner.sleep.stages=[expansion,knowledge-seeding,dreaming]", "learner.sleep.options.dreaming.teacher=agree"]))
    with pytest.raises(ValueError, match="teacher must be one of none, agree, agree-unknown"):
        dreaming.ReSTEMDreamingOptions(teacher="answer")


def test_answers_only_fits_a_qa_dream_as_its_question_to_its_answer(monkeypatch):
    """dreaming.answers_only: the loss of a QA dream falls on its answer alone (as on seeding's pairs); other lines stay whole."""
    learner, curriculum = micro_seal(0)
    monkeypatch.setattr(dreaming, "sample_texts", lambda learner, prompts, *args: ["who is it? A: Ann", "no answer here"] * (len(prompts) // 2))
    fitted: list[tuple[list[str], list[str]]] = []
    monkeypatch.setattr(dreaming, "fit", lambda learner, prompts, completions, *args: fitted.append((list(prompts), list(completions))) or 0.0)
    options = {"rounds": 0, "dreams_per_passage": 2, "consolidate": "every-passage", "anchor_documents": False}
    for answers_only in (False, True):
        dreaming.ReSTEMDreaming.with_options(answers_only=answers_only, **options)(learner, SleepContext(curriculum[0], 2, seed=0))
    (whole_prompts, whole), (prompts, completions) = fitted
    assert set(whole_prompts) == {""} and set(whole) == {"Q: who is it? A: Ann", "Q: no answer here"}
    assert set(zip(prompts, completions)) == {("Q: who is it? A:", "Ann"), ("", "Q: no answer here")} and len(prompts) == len(whole)
    labels = dreaming.encode_pairs(learner.tokenizer, ["Q: who is it? A:"], ["Ann"], 64)["labels"][0]
    assert learner.tokenizer.decode(labels[labels != -100]).strip() == "Ann</s>"  # the question is read, not a target
