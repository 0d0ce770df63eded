"""Text learners on the micro preset (world-micro base): CMS update periods, each sleep stage changes only what it should, state."""

from __future__ import annotations

import copy
import math
from collections import Counter

import pytest
import torch

from somna.learners.base import SleepConfig, SleepContext, derive_seed
from somna.learners.text.encoding import IGNORE, encode_pairs, sample_completions, scored_log_probs
from somna.learners.text.rewards import chrf
from somna.learners.text import seeding
from somna.learners.text.learner import training_only
from somna.learners.text.experts import recorded_outputs
from somna.learners.text.seeding import (
    SEEDING_SALT, GKDSeeding, GKDSeedingOptions, SeedingData, answer_inputs, gate_open_rows, routing_loss, step_rows, store_keys,
    supervised_steps,
)
from somna.learners.text.sleep import CMSExpansion
from somna.platform.builders import build_curriculum, build_learner
from somna.platform.config import ConfigError, load_config
from somna.platform.launch import check_buildable


def setup(*overrides: str, stages: list[str] | None = None):
    """The micro preset with overrides; `stages` replaces its sleep stages (and drops their options)."""
    cfg = load_config("fact-stream-micro", list(overrides))
    if stages is not None:
        cfg.learner.sleep = SleepConfig(stages=stages)
    curriculum = build_curriculum(cfg)
    return cfg, curriculum, build_learner(cfg, curriculum.info)


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def changed(before: dict[str, torch.Tensor], model: torch.nn.Module) -> set[str]:
    return {name for name, tensor in model.state_dict().items() if not torch.equal(before[name], tensor)}


def level(learner, index: int) -> str:
    """The state-dict prefix of CMS level `index`."""
    return next(name for name, module in learner.model.named_modules() if module is learner.cms[index]) + "."


def test_cms_levels_update_only_at_their_period():
    # finetune (online CMS wake): 2 documents, batch 1, 2 steps: level 0 (C=1) steps twice, level 1 (C=4) never.
    _, curriculum, learner = setup("learner=finetune", "learner.batch_size=1", "learner.epochs=1", "learner.model.cms_periods=[1,4]", stages=[])
    before = params(learner.model)
    learner.wake(curriculum[0])
    moved = changed(before, learner.model)
    assert any(name.startswith(level(learner, 0)) for name in moved)
    assert not any(name.startswith(level(learner, 1)) for name in moved)
    assert learner.cms[1].base.fc_in.weight.grad is not None  # the computed, not yet applied update
    learner.apply_pending_updates()
    assert any(name.startswith(level(learner, 1)) for name in changed(before, learner.model))


@pytest.mark.parametrize("memory", ["cms", "context"])
def test_wake_writes_only_the_fast_memory_and_sleep_resets_it(memory):
    """Core, slow levels and experts are bit-identical after a wake; the teacher keeps the store, the student starts without it."""
    _, curriculum, learner = setup(f"learner.fast_memory={memory}", "learner.epochs=3", "learner.lr=0.01", stages=[])
    before = params(learner.model)
    learner.wake(curriculum[0])
    fast_level = level(learner, 0) + "base."
    moved = changed(before, learner.model)
    assert all(name.startswith(fast_level) for name in moved)
    assert bool(moved) == (memory == "cms")  # context keeps the passages in the prompt, not in a weight
    assert all(p.grad is None for name, p in learner.model.named_parameters() if not name.startswith(fast_level))  # frozen: no gradient at all
    assert all(p.requires_grad for p in learner.model.parameters())
    context = learner.begin_sleep(SleepContext(curriculum[0], 2, seed=0))
    assert not changed(before, learner.model)  # the fast store is reset: the student is the slow model
    assert changed(before, context.teacher) == moved and not changed(before, context.slow)
    learner.end_sleep(context)
    assert not changed(before, learner.model)


@pytest.mark.parametrize("keep", [True, False])
def test_the_teacher_masks_the_consolidated_experts_only_when_told(keep):
    """With an expert consolidated by the first sleep, the second sleep's teacher computes what the base does exactly
    when `teacher_experts` is false; the learner's own expert stays on either way."""
    _, curriculum, learner = setup(f"learner.teacher_experts={str(keep).lower()}")
    base = learner.frozen_copy()
    first = learner.begin_sleep(SleepContext(curriculum[0], len(curriculum), seed=0))
    CMSExpansion()(learner, first)
    block, expert = first.new_expert
    with torch.no_grad():
        learner.cms[block].experts[expert].up.weight.fill_(0.1)  # a consolidated expert that changes what the model says
    learner.end_sleep(first)
    second = learner.begin_sleep(SleepContext(curriculum[1], len(curriculum), seed=0))
    probe = learner.encode_documents(curriculum[1].test["text"])
    assert torch.equal(second.teacher(**probe).logits, base(**probe).logits) != keep
    assert learner.cms[block].unlocked() == [expert]
    assert not torch.equal(learner.model(**probe).logits, base(**probe).logits)


def test_expansion_is_function_preserving_and_seeding_trains_only_the_new_expert():
    _, curriculum, learner = setup("learner.fast_memory=cms", "learner.epochs=3", "learner.lr=0.01")
    learner.wake(curriculum[0])
    context = learner.begin_sleep(SleepContext(curriculum[0], len(curriculum), seed=0))
    probe = learner.encode_documents(curriculum[0].test["text"])
    slow = params(learner.model)
    metrics = CMSExpansion()(learner, context)
    assert metrics == {"block": 1.0, "unlocked": 1.0, "active_experts": 1.0}
    new_expert = {f"{level(learner, 1)}experts.0.{p}" for p in ("down.weight", "up.weight", "gate.weight", "gate.bias")}
    assert changed(slow, learner.model) <= {f"{level(learner, 1)}expert_mask"} | new_expert
    assert torch.equal(learner.model(**probe).logits, context.slow(**probe).logits)  # function-preserving

    before = params(learner.model)
    metrics = GKDSeeding.with_options(steps=4, rounds=2, questions_per_passage=2, num_prompts=4, protect_prompts=8, batch_size=2, max_new_tokens=8)(learner, context)
    moved = changed(before, learner.model)
    assert moved and moved <= new_expert  # every other tensor bit-identical
    assert metrics["gkd_loss"] >= 0 and metrics["new_pairs"] > 0 and {"teacher_dev_em", "student_dev_em_before", "student_dev_em_after"} <= set(metrics)
    assert all(p.requires_grad for p in learner.model.parameters())  # freezing is undone
    clone = copy.deepcopy(learner.model)  # the next sleep's teacher must be a real copy
    with torch.no_grad():
        clone.lm_head.weight.add_(1.0)
    assert not torch.equal(clone(**probe).logits, learner.model(**probe).logits)


@pytest.mark.learned
def test_knowledge_seeding_lowers_the_teacher_student_divergence():
    """At the CMS fast memory's lr of the fact-stream table (0.01) wake opens a real gap (KL 2.8 on seed 0) and
    seeding closes most of it (0.8); a wake that barely moves the fast level (lr 0.003: KL 0.17) leaves nothing to close."""
    _, curriculum, learner = setup("learner.fast_memory=cms", "learner.epochs=10", "learner.lr=0.01")
    learner.wake(curriculum[0])
    context = learner.begin_sleep(SleepContext(curriculum[0], len(curriculum), seed=0))
    CMSExpansion()(learner, context)
    metrics = learner.sleep_stages["knowledge-seeding"](learner, context)
    assert metrics["kl_after"] < 0.9 * metrics["kl_before"]


@pytest.mark.learned
def test_the_router_loss_opens_the_new_expert_on_new_rows_and_shuts_it_on_protection():
    """Same sleep, same seed, with and without route_weight: the loss moves the new expert's router apart
    (open on the teacher's new pairs, shut on the slow model's generations), and only the new expert moves."""
    def seeded(route_weight: float) -> dict[str, float]:
        _, curriculum, learner = setup()
        learner.wake(curriculum[0])
        context = learner.begin_sleep(SleepContext(curriculum[0], len(curriculum), seed=0))
        CMSExpansion()(learner, context)
        before = params(learner.model)
        stage = GKDSeeding.with_options(steps=30, questions_per_passage=2, num_prompts=4, protect_prompts=8, batch_size=2, max_new_tokens=8, route_weight=route_weight)
        metrics = stage(learner, context)
        assert changed(before, learner.model) <= {f"{level(learner, 1)}experts.0.{p}" for p in ("down.weight", "up.weight", "gate.weight", "gate.bias")}
        return metrics

    plain, routed = seeded(0.0), seeded(1.0)
    assert routed["router_open_new"] > 0.5 > routed["router_open_protect"]
    assert routed["router_open_new"] - routed["router_open_protect"] > plain["router_open_new"] - plain["router_open_protect"] + 0.2


def test_the_router_loss_reads_the_scored_positions_of_the_rows_it_is_given():
    """Against a hand computation: BCE towards 1 on the first batch's chosen rows and towards 0 on the second's, at
    the positions that predict a scored token, each batch averaged on its own; no row chosen: zero, still differentiable."""
    batch = {"labels": torch.tensor([[IGNORE, 5, 6], [IGNORE, IGNORE, 7]])}  # scored: row 0 positions 0, 1; row 1 position 1
    new = torch.tensor([[0.5, 1.0, 9.0], [-9.0, 3.0, 9.0]]).unsqueeze(-1)
    protect = torch.tensor([[9.0, 9.0, 9.0], [-9.0, 0.5, 9.0]]).unsqueeze(-1).requires_grad_()
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731 (BCE with logits: target 1 -> softplus(-x), target 0 -> softplus(x))
    chosen = [torch.tensor([True, False]), torch.tensor([False, True])]
    expected = ((softplus(-0.5) + softplus(-1.0)) / 2 + softplus(0.5)) / 2
    assert routing_loss([new, protect], [batch, batch], chosen).item() == pytest.approx(expected, rel=1e-6)
    everything = [torch.tensor([True, True])] * 2
    expected = ((softplus(-0.5) + softplus(-1.0) + softplus(-3.0)) / 3 + (softplus(9.0) + softplus(9.0) + softplus(0.5)) / 3) / 2
    assert routing_loss([new, protect], [batch, batch], everything).item() == pytest.approx(expected, rel=1e-6)
    nothing = routing_loss([protect, protect], [batch, batch], [torch.tensor([False, False])] * 2)
    nothing.backward()
    assert nothing.item() == 0.0 and protect.grad is not None


def test_routing_on_questions_leaves_a_sleep_without_questions_as_it_was():
    """route_on="questions" reads only closed-book rows: on pairs that hold none the router loss adds nothing (the
    new expert ends bit-identical to a sleep without it), while route_on="all" moves it."""
    _, curriculum, learner = setup()
    learner.wake(curriculum[0])
    context = learner.begin_sleep(SleepContext(curriculum[0], len(curriculum), seed=0))
    CMSExpansion()(learner, context)
    start = params(learner.model)
    router = learner.cms[context.new_expert[0]].experts[context.new_expert[1]].gate
    new = SeedingData(["Teme likes"] * 2, ["Teme likes"] * 2, ["to eat honey."] * 2)
    protect = SeedingData(["Vasube earns a living as a singer. Q:"] * 2, [""] * 2, ["What does Vasube do? A: singer"] * 2)

    def expert_after(**routing) -> dict[str, torch.Tensor]:
        learner.model.load_state_dict(start)
        with training_only(learner.model, learner.sleep_parameters(context)):
            supervised_steps(learner, new, protect, learner.frozen_copy(), 3, 1e-2, 2, 0.5, seed=0, router=router, **routing)
        return {name: tensor for name, tensor in params(learner.model).items() if name.startswith(level(learner, context.new_expert[0]))}

    plain = expert_after(route_weight=0.0)
    assert all(torch.equal(plain[k], v) for k, v in expert_after(route_weight=1.0, route_on="questions").items())
    assert not all(torch.equal(plain[k], v) for k, v in expert_after(route_weight=1.0, route_on="all").items())


def pairs(prompts: list[str], completion: str) -> SeedingData:
    return SeedingData(prompts, [""] * len(prompts), [completion] * len(prompts))


def test_cue_rows_give_the_cues_their_own_rows_in_every_step_however_many_generations():
    """In one shared draw, 10 cues among 200 generations get at most one of 200 rows; with rows of their own
    (cue_rows=2) every step holds 2 of them, each cue drawn equally often, and the generations keep their 4."""
    generations, cues = pairs([f"g{i}" for i in range(200)], "x"), pairs([f"Q: c{i}? A:" for i in range(10)], "y")
    is_cue = lambda prompt: prompt.startswith("Q:")  # noqa: E731
    shared = step_rows([(pairs(generations.prompts + cues.prompts, "x"), 4, 1)], 50)
    assert max(Counter(p for rows in shared for p, _ in rows if is_cue(p)).values(), default=0) <= 1
    own = step_rows([(generations, 4, 1), (cues, 2, 2)], 50)
    assert all(len(rows) == 6 and sum(map(is_cue, (p for p, _ in rows))) == 2 for rows in own)
    assert set(Counter(p for rows in own for p, _ in rows if is_cue(p)).values()) == {10}
    assert [rows[:4] for rows in own] == step_rows([(generations, 4, 1)], 50)  # the generations' draw is untouched


def test_cue_rows_enter_the_protection_loss_and_need_cues():
    _, curriculum, learner = setup()
    learner.wake(curriculum[0])
    context = learner.begin_sleep(SleepContext(curriculum[0], len(curriculum), seed=0))
    CMSExpansion()(learner, context)
    start = params(learner.model)
    new = SeedingData(["Teme likes"] * 2, ["Teme likes"] * 2, ["to eat honey."] * 2)
    protect = pairs(["Vasube earns a living as a singer. Q:"] * 2, "What does Vasube do? A: singer")

    def after(**cued) -> dict[str, torch.Tensor]:
        learner.model.load_state_dict(start)
        with training_only(learner.model, learner.sleep_parameters(context)):
            supervised_steps(learner, new, protect, learner.frozen_copy(), 3, 1e-2, 2, 0.5, seed=0, **cued)
        return params(learner.model)

    plain = after()
    assert all(torch.equal(plain[k], v) for k, v in after(cues=pairs([], ""), cue_rows=2).items())
    assert not all(torch.equal(plain[k], v) for k, v in after(cues=pairs(["Q: Who is Teme? A:"], "a baker"), cue_rows=2).items())
    with pytest.raises(ValueError, match="cue_rows draws from the rehearsal cues: set rehearse_questions > 0"):
        GKDSeedingOptions(cue_rows=2)


def test_seeding_without_expansion_trains_the_receiving_level_only():
    _, curriculum, learner = setup("learner.model.cms_periods=[1,4]", stages=["knowledge-seeding"])
    learner.wake(curriculum[0])
    context = learner.begin_sleep(SleepContext(curriculum[0], 2, seed=0))
    before = params(learner.model)
    GKDSeeding.with_options(steps=2, questions_per_passage=2, num_prompts=4, protect_prompts=8, batch_size=2, max_new_tokens=8)(learner, context)
    assert changed(before, learner.model) and all(n.startswith(level(learner, 1)) for n in changed(before, learner.model))


@pytest.mark.parametrize("periods", [[1, 2], [1, 2, 4], [1, 2, 4, 8]])
def test_the_receiver_cycles_through_the_slow_levels_in_cms_order(tiny_llama, periods):
    """Level 0 (the fast memory) always sends; sleep k gives level 1 + k mod (L-1) its expert; consolidated experts stay."""
    _, curriculum, learner = setup(f"learner.model.base={tiny_llama}", f"learner.model.cms_periods=[{','.join(map(str, periods))}]", "learner.model.num_experts=4")
    received = []
    for _ in range(2 * (len(periods) - 1)):
        context = learner.begin_sleep(SleepContext(curriculum[0], 2, seed=0))
        received.append(int(CMSExpansion()(learner, context)["block"]))
        learner.end_sleep(context)
    assert received == [1 + k % (len(periods) - 1) for k in range(len(received))]
    assert learner.cms[0].unlocked() == [] and all(len(block.unlocked()) == 2 for block in learner.cms[1:])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["curriculum.num_experiences=3"], "learner.model.num_experts=2 runs out: this stream's 3 sleeps give CMS level 1 3 experts"),
        (["learner.model.num_experts=1"], "this stream's 2 sleeps give CMS level 1 2 experts; set learner.model.num_experts>=2"),
    ],
)
def test_a_sleep_that_would_find_no_locked_expert_is_a_config_error(overrides, message):
    """Expansion unlocks one expert per sleep: running out is refused before anything starts (it used to train the whole level)."""
    with pytest.raises(ConfigError) as error:
        check_buildable(load_config("fact-stream-micro", overrides))
    assert message in str(error.value) and "\n" not in str(error.value)
    check_buildable(load_config("fact-stream-micro", [*overrides, "learner.sleep.stages=[knowledge-seeding]"]))  # no expansion, no limit


@pytest.mark.parametrize("window", [1, 2])
def test_a_keyed_sleep_gives_the_new_expert_the_inputs_it_is_taught_on_and_it_acts_nowhere_else(window):
    """With expert_keys, knowledge seeding stores the receiving level's key queries (its inputs, or with key_window 2
    their sums over two tokens) at the new pairs' answer positions as the new expert's keys (as many as there are such
    positions, up to the bank's size), before it trains; after the sleep, wherever the level's query is below the
    threshold its output is exactly its base MLP's."""
    cfg, curriculum, learner = setup("learner.model.expert_keys=4096", "learner.model.key_threshold=0.95", f"learner.model.key_window={window}")
    learner.wake(curriculum[0])
    context = learner.begin_sleep(SleepContext(curriculum[0], len(curriculum), seed=0))
    CMSExpansion()(learner, context)
    stage = GKDSeeding.with_options(steps=6, questions_per_passage=2, num_prompts=4, protect_prompts=8, batch_size=2, max_new_tokens=8)
    seed = derive_seed(learner.seed, 0, SEEDING_SALT)
    new = stage.new_knowledge(learner, context.teacher, curriculum[0], seed)
    block, expert = learner.cms[context.new_expert[0]], context.new_expert[1]
    inputs = answer_inputs(learner.model, block, learner.tokenizer, new, cfg.learner.max_length)
    taught = answer_inputs(learner.model, block, learner.tokenizer, new, cfg.learner.max_length, as_queries=True)
    assert torch.allclose(taught, torch.nn.functional.normalize(inputs, dim=-1), atol=1e-6) == (window == 1)
    metrics = stage(learner, context)
    assert metrics["keys"] == len(taught) == int(block.key_counts[expert]) > 0
    assert torch.allclose(block.expert_keys[expert, : len(taught)], taught, atol=1e-5)
    assert 0.0 <= metrics["key_gate_open_protect"] <= 1.0 and 0.0 <= metrics["key_gate_open_dev"] <= 1.0
    probe = learner.encode_documents(curriculum[1].test["text"])
    with recorded_outputs(block) as outputs:
        seen = []
        handle = block.register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
        learner.model(**probe)
        handle.remove()
    far = block.key_similarity(expert, block.key_queries(seen[0], probe["attention_mask"])) < 0.95
    assert far.any() and torch.equal(outputs[0][far], block.base(seen[0])[far])
    rebuilt = build_learner(cfg, curriculum.info)
    rebuilt.load_state_dict(copy.deepcopy(learner.state_dict()))
    assert torch.equal(rebuilt.model(**probe).logits, learner.model(**probe).logits)


@pytest.mark.parametrize("periods, threshold", [("[1,2]", 0.8), ("[1,2,4]", 0.95)])  # level 1 in the last layer, then a middle one
def test_protection_where_the_gate_opens_keeps_exactly_the_rows_whose_scored_outputs_the_expert_can_change(periods, threshold, monkeypatch):
    """gate_open_rows: a protection row whose answers the new expert (random weights, keyed) leaves bit-identical to the
    slow model's is dropped, and every row it changes is kept, in the last layer and below it (thresholds that open the
    micro base's gate on some rows but not all); with protect_where=gate-open, those rows are all the protection the
    seeding steps are given."""
    cfg, curriculum, learner = setup(
        "learner.model.expert_keys=4096", f"learner.model.key_threshold={threshold}", f"learner.model.cms_periods={periods}", "learner.receiver=1",
    )
    learner.wake(curriculum[0])
    context = learner.begin_sleep(SleepContext(curriculum[0], len(curriculum), seed=0))
    CMSExpansion()(learner, context)
    options = dict(questions_per_passage=2, num_prompts=4, protect_prompts=32, max_new_tokens=8)
    stage = GKDSeeding.with_options(**options)
    seed = derive_seed(learner.seed, 0, SEEDING_SALT)
    new, protect = stage.new_knowledge(learner, context.teacher, curriculum[0], seed), stage.protection(learner, context.slow, seed)
    store_keys(learner, context.new_expert, new, protect, curriculum[0], seed)
    kept = gate_open_rows(learner, context.new_expert, protect)
    level_index, expert = context.new_expert
    torch.manual_seed(0)
    with torch.no_grad():
        for weight in learner.cms[level_index].experts[expert].parameters():
            weight.normal_()
    changes = []
    for prompt, completion in zip(protect.prompts, protect.completions):
        batch = encode_pairs(learner.tokenizer, [prompt], [completion], cfg.learner.max_length)
        changes.append(not torch.equal(scored_log_probs(learner.model, batch), scored_log_probs(context.slow, batch)))
    assert [i for i, change in enumerate(changes) if change] == kept
    assert 0 < len(kept) < len(protect.prompts)
    drawn = []
    monkeypatch.setattr(seeding, "supervised_steps", lambda learner, new, protect, *args, **kwargs: drawn.append(protect) or 0.0)
    metrics = GKDSeeding.with_options(**options, protect_where="gate-open")(learner, context)
    assert drawn[0].prompts == [protect.prompts[i] for i in kept]  # every protection row a step may draw is one of them
    assert (metrics["protect_rows"], metrics["protect_rows_gate_open"]) == (len(protect.prompts), len(kept))


@pytest.mark.parametrize(
    "override, message",
    [
        ("learner.model.expert_keys=-1", "learner.model.expert_keys must be >= 0 and learner.model.key_threshold a cosine similarity in"),
        ("learner.model.key_threshold=1.5", "learner.model.expert_keys must be >= 0 and learner.model.key_threshold a cosine similarity in"),
        ("learner.model.key_window=0", "learner.model.key_window must be >= 1"),
        ("learner.sleep.options.knowledge-seeding.protect_where=gate-open", "protect_where=gate-open reads the new expert's keyed gate: set learner.model.expert_keys > 0"),
        ("learner.sleep.options.knowledge-seeding.protect_where=open", "protect_where must be one of all, gate-open, got 'open'"),
    ],
)
def test_a_keyed_gate_out_of_range_is_a_config_error(override, message):
    with pytest.raises(ConfigError, match=message) as error:
        check_buildable(load_config("fact-stream-micro", [override]))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["sleep", "replay"])
def test_state_dict_restores_the_learner_exactly(name):
    cfg, curriculum, learner = setup(f"learner={name}", stages=[])
    learner.wake(curriculum[0])
    learner.sleep(SleepContext(curriculum[0], 2, seed=0))
    state = learner.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    rebuilt = build_learner(cfg, curriculum.info)
    rebuilt.load_state_dict(copy.deepcopy(state))
    assert rebuilt.evaluate(curriculum[1]) == learner.evaluate(curriculum[1])
    if name == "replay":
        assert rebuilt.buffer == learner.buffer and len(learner.buffer) == len(curriculum[0].train)


@pytest.mark.learned
@pytest.mark.parametrize("kept", [0, 3])
def test_a_sleep_keeps_its_own_questions_as_cues_and_the_next_sleep_protects_them(kept):
    """rehearse_questions: a sleep keeps that many of the questions the teacher wrote (one-line closed-book cues, no
    passage); they travel in the state dict, and the next sleep's protection asks them of the slow model."""
    cfg, curriculum, learner = setup(f"learner.sleep.options.knowledge-seeding.rehearse_questions={kept}")
    learner.wake(curriculum[0])
    metrics = learner.sleep(SleepContext(curriculum[0], 2, seed=0))
    cues = learner.rehearsal_cues
    assert metrics["knowledge-seeding/rehearsal_cues"] == 0.0 and len(cues) == kept == len(set(cues))
    passages = curriculum[0].train["text"]
    assert all(cue.startswith("Q: ") and cue.endswith("? A:") and "\n" not in cue and cue not in passages for cue in cues)
    rebuilt = build_learner(cfg, curriculum.info)
    rebuilt.load_state_dict(copy.deepcopy(learner.state_dict()))
    assert rebuilt.rehearsal_cues == cues
    protect = learner.sleep_stages["knowledge-seeding"].protection(learner, learner.frozen_copy(), seed=1)
    asked = [prompt for prompt in protect.prompts if prompt in cues]
    assert sorted(asked) == sorted(cues)  # each cue asked once, answered by the slow model
    assert all(completion for prompt, completion in zip(protect.prompts, protect.completions) if prompt in cues)


@pytest.mark.learned
def test_finetune_memorises_the_passages_it_reads():
    _, curriculum, learner = setup("learner=finetune", "learner.epochs=30", "learner.lr=0.003", stages=[])
    passages = list(curriculum[0].train["text"])
    cues = [" ".join(text.split()[:3]) for text in passages]
    with torch.no_grad():
        base_loss = float(learner.model(**learner.encode_documents(passages)).loss)
    learner.wake(curriculum[0])
    with torch.no_grad():
        trained_loss = float(learner.model(**learner.encode_documents(passages)).loss)
    recalled = learner.generate(cues, 40)
    assert trained_loss < base_loss / 4
    assert sum(chrf(f"{cue} {text}", passage) for cue, text, passage in zip(cues, recalled, passages)) / len(passages) > 0.8


@pytest.mark.learned
def test_the_in_context_ceiling_reads_the_passage_the_base_learned_to_read():
    _, curriculum, learner = setup("learner=in-context", "curriculum.entities_per_experience=25", stages=[])
    row = curriculum[0].test[0]
    assert learner.probe_prompt(row) == f"{row['context']} {row['prompt']}"
    closed = setup("learner=finetune", "curriculum.entities_per_experience=25", stages=[])[2]
    assert learner.evaluate(curriculum[0])["exact_match"] > 0.4 > 0.2 > closed.evaluate(curriculum[0])["exact_match"]
    weights = {name: tensor.clone() for name, tensor in learner.model.state_dict().items()}
    learner.wake(curriculum[0])  # the knowledge stays in the prompt: the reading base is not fine-tuned away
    assert all(torch.equal(tensor, learner.model.state_dict()[name]) for name, tensor in weights.items())


@pytest.mark.learned
def test_the_last_experience_evaluation_scores_the_base_skills():
    _, curriculum, learner = setup(stages=[])
    assert "skill/in_context_qa" not in learner.evaluate(curriculum[0])
    scores = learner.evaluate(curriculum[1])
    assert {"skill/in_context_qa", "skill/closed_book_qa_world"} <= set(scores) and scores["skill/in_context_qa"] > 0.6
    assert "skill/in_context_qa" not in setup("learner.skill_probes=0", stages=[])[2].evaluate(curriculum[1])


@pytest.mark.learned
def test_seeding_samples_the_teacher_after_bos_as_wake_trained_it():
    """The teacher's samples continue the documents it read only when the prompt starts with <s>, as in wake.

    Seeding used to render cues without <s>; the woken model's per-token loss on its own documents is
    many times higher without it and its samples were noise, so its distillation data was too."""
    _, curriculum, learner = setup("learner=finetune", "learner.epochs=30", "learner.lr=0.003", stages=[])
    learner.wake(curriculum[0])
    tokenizer, passages = learner.tokenizer, list(curriculum[0].train["text"])
    cues = [" ".join(text.split()[:3]) for text in passages] * 4
    sources = passages * 4
    with_bos = sample_completions(learner.model, tokenizer, cues, 40, seed=0)
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": cues[0]}], tokenize=True, add_generation_prompt=True)
    assert rendered["input_ids"][0] == tokenizer.bos_token_id  # what GKD and GRPO render too
    without = copy.deepcopy(tokenizer)
    without.chat_template = tokenizer.chat_template.replace("{{ bos_token }}", "")
    without_bos = sample_completions(learner.model, without, cues, 40, seed=0)

    def fidelity(samples: list[str]) -> float:
        return sum(chrf(f"{cue} {sample}", source) for cue, sample, source in zip(cues, samples, sources)) / len(cues)

    assert fidelity(with_bos) > fidelity(without_bos) + 0.2
    batch = learner.encode_documents(passages)
    with torch.no_grad():
        with_loss = float(learner.model(**batch).loss)
        shifted = {key: value[:, 1:] for key, value in batch.items()}  # the same documents without their <s>
        without_loss = float(learner.model(**shifted).loss)
    assert without_loss > 3 * with_loss


def test_the_pending_wake_update_travels_in_the_state_dict_until_sleep_applies_it():
    """A learner rebuilt between wake and sleep (a Ray Train sleep worker) applies the same update."""
    cfg = load_config("fact-stream-micro", ["learner=finetune", "learner.epochs=1", "learner.model.cms_periods=[1,4]"])
    curriculum = build_curriculum(cfg)
    woken = build_learner(cfg, curriculum.info)
    before = params(woken.model)
    woken.wake(curriculum[0])  # one step: the period-4 level has a summed gradient, not yet applied
    state = woken.state_dict()
    pending_level = level(woken, 1)
    assert "pending.active" in state and any(k.startswith(f"pending.grad.{pending_level}") for k in state)
    rebuilt = build_learner(cfg, curriculum.info)
    rebuilt.load_state_dict(state)
    woken.apply_pending_updates()
    rebuilt.apply_pending_updates()
    assert any(name.startswith(pending_level) for name in changed(before, woken.model))
    assert all(torch.equal(value, params(rebuilt.model)[name]) for name, value in params(woken.model).items())
    assert not any(k.startswith("pending.") for k in woken.state_dict())  # applied: checkpoints never hold it
    woken.wake(curriculum[1])
    woken.load_state_dict(rebuilt.state_dict())  # loading a state without a pending update drops the stale one
    assert woken._optimizers is None and all(p.grad is None for p in woken.model.parameters())


def test_a_wake_starts_from_no_gradient_whatever_the_sleep_left():
    """Gradients a sleep stage leaves on the parameters must not leak into the next wake's first update."""
    cfg, curriculum, clean = setup("learner=finetune", "learner.epochs=1", stages=[])
    dirty = build_learner(cfg, curriculum.info)
    for parameter in dirty.model.parameters():
        parameter.grad = torch.ones_like(parameter)
    clean.wake(curriculum[0])
    dirty.wake(curriculum[0])
    assert all(torch.equal(value, params(dirty.model)[name]) for name, value in params(clean.model).items())


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from helpers import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), layers=4)  # room for a 4-level CMS


@pytest.mark.learned
def test_the_semantic_judge_scores_its_own_data_and_its_ablation_changes_the_sleep():
    """r_sem used to be ~0 on imitation data (an exact bag-of-words match), so GRPO's per-group normalisation
    made gamma a no-op and the -semantic-reward row equalled sleep's; now the judge says yes often and gamma matters."""
    _, curriculum, learner = setup()
    learner.wake(curriculum[0])
    twin = copy.deepcopy(learner)
    options = {"alpha": 0.5, "steps": 40, "imitation_steps": 2, "questions_per_passage": 2, "num_prompts": 8, "protect_prompts": 0, "num_generations": 4, "max_new_tokens": 16, "lr": 0.05}
    results = []
    for gamma, each in ((0.5, learner), (0.0, twin)):
        context = each.begin_sleep(SleepContext(curriculum[0], 2, seed=0))
        CMSExpansion()(each, context)
        results.append(GKDSeeding.with_options(gamma=gamma, **options)(each, context))
    assert results[0]["r_sem"] > 0.2 and results[0]["r_sem"] != results[0]["r_abs"]
    assert changed(params(twin.model), learner.model)  # the same sleep without the judge trains another expert
