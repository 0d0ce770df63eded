"""Dreaming: gradient selection, novelty routing only while dreaming, ReST-EM moves the generator to rewarded dreams."""

from __future__ import annotations

import json

import torch

import somna.learners.lm_dreaming as dreaming
from somna.learners.base import SleepConfig, SleepContext
from somna.learners.lm_learner import answer_nll, encode_pairs
from somna.learners.lm_model import SleepLM, SleepLMConfig
from somna.learners.lm_tokenizer import build_byte_tokenizer
from somna.platform.builders import build_curriculum, build_learner
from somna.platform.config import load_config
from somna.platform.registry import LEARNERS


def test_select_keeps_the_top_scores_plus_random_others():
    scores = [0.1, 5.0, 3.0, 0.2, 4.0]
    generator = torch.Generator().manual_seed(0)
    assert dreaming.select(scores, top_k=2, random_keep=0, generator=generator) == [1, 4]
    kept = dreaming.select(scores, top_k=2, random_keep=2, generator=generator)
    assert kept[:2] == [1, 4] and len(set(kept)) == 4 and set(kept[2:]) <= {0, 2, 3}


def test_gradient_score_is_small_for_a_dream_the_model_already_knows():
    torch.manual_seed(0)
    tokenizer = build_byte_tokenizer()
    model = SleepLM(SleepLMConfig(dim=32, num_heads=2, cms_periods=[1], max_positions=64))
    known = "mila eats plums."
    dreaming.sft_steps(model, encode_pairs(tokenizer, [""], [known], 64), steps=60, lr=1e-2)
    known_score, novel_score = dreaming.gradient_scores(model, tokenizer, [known, "zq vx kk pt"], 64)
    assert known_score < novel_score / 5
    order = dreaming.select([known_score, novel_score], top_k=1, random_keep=0, generator=torch.Generator())
    assert order == [1]


def test_novelty_routing_changes_the_model_only_while_dreaming():
    torch.manual_seed(0)
    model = SleepLM(SleepLMConfig(dim=32, num_heads=2, cms_periods=[1, 4], num_experts=2, max_positions=64)).eval()
    model.unlock_expert(1)
    with torch.no_grad():
        model.cms[1].experts[0].up.weight.normal_()
    ids = torch.randint(0, 256, (2, 10), generator=torch.Generator().manual_seed(1))
    awake = model(input_ids=ids).logits
    with model.novelty_routing(torch.Generator().manual_seed(0)):
        assert model.cms[1].novelty_expert == 0 and model.cms[0].novelty_expert is None  # block 0 has none unlocked
        dreaming_logits = model(input_ids=ids).logits
    assert not torch.allclose(dreaming_logits, awake)
    assert torch.equal(model(input_ids=ids).logits, awake) and model.cms[1].novelty_expert is None


def test_dream_logs_every_dream_and_rest_em_fits_the_rewarded_ones(tmp_path, monkeypatch):
    cfg = load_config("fact-stream-micro", ["learner=seal", "learner.epochs=20", "learner.model.dim=64", "learner.lr=0.01"])
    cfg.learner.sleep = SleepConfig(stages=["dreaming"])
    curriculum = build_curriculum(cfg)
    learner = build_learner(cfg, curriculum.info)
    learner.wake(curriculum[0])
    monkeypatch.setattr(dreaming, "lora_improvement", lambda *args, **kwargs: 1.0)  # every kept dream is rewarded
    before = {k: v.clone() for k, v in learner.model.state_dict().items()}
    metrics = learner.dream(
        SleepContext(curriculum[0], 2, seed=0, artifacts_dir=tmp_path), top_k=2, random_keep=1, max_new_tokens=16, consolidation_steps=0
    )
    records = [json.loads(line) for line in (tmp_path / "dreams.jsonl").read_text().splitlines()]
    kept = [r for r in records if r["kept"]]
    assert len(records) == metrics["dreams"] and len(kept) == 3 and all(r["reward"] == 1.0 for r in kept)
    assert metrics["rewarded_fraction/round0"] == 1.0
    rewarded = ([r["passage"] for r in kept], [r["dream"] for r in kept])
    after_nll = answer_nll(learner.model, learner.tokenizer, *rewarded)[0]
    learner.model.load_state_dict(before)
    assert after_nll < answer_nll(learner.model, learner.tokenizer, *rewarded)[0]  # the M-step fitted them


def test_dreaming_learners_are_registered_for_text():
    assert {"text"} <= set(LEARNERS.modalities("seal")) and {"text"} <= set(LEARNERS.modalities("finetune-no-dream"))
