"""Bases for every text learner: a Hugging Face causal LM (an offline tiny Llama) runs a wake and a sleep; bad bases are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import save_tiny_llama

from somna.learners.text.experts import ExpertMLP
from somna.platform.builders import build_curriculum, build_learner
from somna.platform.config import ConfigError, load_config
from somna.platform.launch import check_buildable
from somna.platform.runner import run


def test_a_hugging_face_causal_lm_gets_a_cms_and_runs_a_wake_and_a_sleep(tmp_path):
    base = save_tiny_llama(tmp_path / "llama")
    cfg = load_config("fact-stream-micro", [f"learner.model.base={base}", "curriculum.num_experiences=1", "learner.fast_memory=cms"])  # wake trains the Llama's level-0 MLP
    learner = build_learner(cfg, build_curriculum(cfg).info)
    assert type(learner.model).__name__ == "LlamaForCausalLM" and learner.tokenizer.chat_template  # ours, it had none
    wrapped = [name for name, module in learner.model.named_modules() if isinstance(module, ExpertMLP)]
    assert wrapped == ["model.layers.1.mlp", "model.layers.2.mlp"] and learner.skills == {}
    summary = run(cfg, tmp_path / "run")
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    (wake,), (sleep,) = [e for e in events if e["event"] == "wake"], [e for e in events if e["event"] == "sleep"]
    assert wake["metrics"]["steps"] > 0 and sleep["metrics"]["expansion/unlocked"] == 1.0
    assert sleep["metrics"]["knowledge-seeding/gkd_loss"] >= 0 and sleep["metrics"]["knowledge-seeding/kl_after"] >= 0
    assert "skill_retention" not in summary  # a base without a world has no skills to keep


@pytest.mark.parametrize("base, message", [("no-such-model-anywhere", "cannot load 'no-such-model-anywhere'"), ("DAMAGED", "missing or changed")])
def test_a_base_that_cannot_be_loaded_is_a_one_line_config_error(base, message, tmp_path):
    if base == "DAMAGED":
        cfg = load_config("fact-stream-micro")
        source = build_learner(cfg, build_curriculum(cfg).info).config.model.base  # the cached world-micro directory
        base = tmp_path / "damaged"
        base.mkdir()
        for file in Path(source).iterdir():
            (base / file.name).write_bytes(file.read_bytes())
        (base / "skills.json").write_text("{}")
    with pytest.raises(ConfigError) as error:
        check_buildable(load_config("fact-stream-micro", [f"learner.model.base={base}"]))
    assert message in str(error.value) and "\n" not in str(error.value)
