"""`somna pretrain` and the base cache: a base directory sealed by its manifest, reused, rebuilt when damaged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import somna.platform.pretraining as pretraining
from somna.learners.text.bases import load_base, manifest_problem
from somna.platform.cli import main
from somna.platform.config import ConfigError

QUICK = ["train.steps=3", "train.batch_size=8", "eval.probes=4", "tokenizer.documents=200"]  # seconds, for the plumbing


def test_the_cache_is_reused_and_a_damaged_entry_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("SOMNA_CACHE_DIR", str(tmp_path / "cache"))
    cfg = pretraining.load_pretrain_config("world-micro", QUICK)
    entry = pretraining.cached_base(cfg, progress=False)
    assert entry.parent == tmp_path / "cache" / "bases" and entry.name.startswith("world-micro-")
    assert manifest_problem(entry) is None and not list(entry.parent.glob(".*tmp-*"))  # written whole, then renamed
    weights = (entry / "model.safetensors").read_bytes()

    def no_pretraining(*args, **kwargs):
        raise AssertionError("a cached base must be reused, not pretrained again")

    with monkeypatch.context() as patched:
        patched.setattr(pretraining, "pretrain_into", no_pretraining)
        assert pretraining.cached_base(cfg, progress=False) == entry
    (entry / "model.safetensors").write_bytes(weights[: len(weights) // 2])  # a damaged entry ...
    assert "model.safetensors" in manifest_problem(entry)
    with pytest.raises(ValueError, match="missing or changed"):
        load_base(str(entry))  # ... is never half-loaded
    assert pretraining.cached_base(cfg, progress=False) == entry  # ... and is rebuilt: same config, same seed
    assert manifest_problem(entry) is None and (entry / "model.safetensors").read_bytes() == weights
    other = pretraining.load_pretrain_config("world-micro", [*QUICK, "seed=1"])
    assert pretraining.cache_entry(other) != entry  # the key is the resolved config


def test_a_pretrain_yaml_named_as_a_learners_base_is_pretrained_once_into_the_cache(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    monkeypatch.setenv("SOMNA_CACHE_DIR", str(tmp_path / "cache"))
    recipe = tmp_path / "my-base.yaml"
    recipe.write_text((pretraining.PRESETS_DIR / "world-micro.yaml").read_text())
    learner = OmegaConf.create({"model": {"base": str(recipe)}})
    monkeypatch.setattr(pretraining, "pretrain_into", lambda cfg, folder, progress: (folder / "weights").write_text(cfg.name))
    resolved = pretraining.resolve_base(learner).model.base
    assert resolved == str(pretraining.cache_entry(pretraining.load_pretrain_config(str(recipe))))
    assert (Path(resolved) / "weights").read_text() == "my-base" and learner.model.base == str(recipe)


def test_somna_pretrain_writes_a_sealed_base_and_never_overwrites(tmp_path, capsys):
    out = tmp_path / "base"
    assert main(["pretrain", "world-micro", *QUICK, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(pretraining.SUMMARY_KEYS) <= set(summary) and summary["tokens"] > 0 and summary["params"] > 0
    assert {"config.json", "model.safetensors", "tokenizer.json", "skills.json", "loss.png", "pretrain.yaml", "manifest.json"} <= {p.name for p in out.iterdir()}
    assert "in_context_qa" in capsys.readouterr().out
    base = load_base(str(out))
    assert set(base.skills) == {"in_context_qa", "closed_book_qa_world"} and len(base.skills["in_context_qa"]) == 4
    before = (out / "model.safetensors").read_bytes()
    assert main(["pretrain", "world-micro", *QUICK, "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and (out / "model.safetensors").read_bytes() == before


def test_a_recipe_that_extends_another_is_the_whole_recipe_written_out(tmp_path):
    """`extends` names a preset or a file relative to the extending one; the result (and so the cache key) is the
    merged recipe, the extended one's keys first, and the name is the extending file's."""
    (tmp_path / "wider.yaml").write_text("extends: world-micro\nname: wide\nmodel: {dim: 96}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "longer.yaml").write_text("extends: ../wider.yaml\ntrain: {steps: 5000}\n")
    extended = pretraining.load_pretrain_config(str(tmp_path / "sub" / "longer.yaml"))
    written_out = pretraining.load_pretrain_config("world-micro", ["name=longer", "model.dim=96", "train.steps=5000"])
    assert extended == written_out and pretraining.config_digest(extended) == pretraining.config_digest(written_out)
    assert extended.model.num_layers == 3 and extended.train.batch_size == 32  # the rest is world-micro's
    assert pretraining.load_pretrain_config(str(tmp_path / "wider.yaml")).name == "wide"  # a file's own name wins, but is not inherited


@pytest.mark.parametrize(
    "text, message",
    [
        ("extends: nowhere.yaml\n", "pretrain config file not found: {dir}/nowhere.yaml (extended by {dir}/a.yaml)"),
        ("extends: b.yaml\n", "extends itself: {dir}/a.yaml -> {dir}/b.yaml -> {dir}/a.yaml"),
        ("extends: [world]\n", "extends must name a pretrain preset or a YAML file, got ['world']"),
    ],
)
def test_a_bad_extends_is_a_one_line_error(tmp_path, text, message):
    (tmp_path / "a.yaml").write_text(text)
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError) as error:
        pretraining.load_pretrain_config(str(tmp_path / "a.yaml"))
    assert message.format(dir=tmp_path.resolve()) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    "source, overrides, message",
    [
        ("wrld", [], "unknown pretrain preset 'wrld'; presets: world, world-deltanet, world-micro"),
        ("world-micro", ["world.chain=0"], "chain must be >= 1"),
        ("world-micro", ["train.stepz=3"], "unknown key 'train.stepz'"),
        ("world-micro", ["world.min_facts=5", "world.max_facts=2"], "min_facts <= max_facts"),
        ("world-micro", ["model.dim=abc"], "bad value for 'model.dim'"),
    ],
)
def test_bad_pretrain_configs_are_one_line_errors(source, overrides, message):
    with pytest.raises(ConfigError) as error:
        pretraining.load_pretrain_config(source, overrides)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.slow
@pytest.mark.learned
def test_world_micro_reads_unseen_passages_and_recalls_its_world():
    """The `world-micro` base (the tests' base) reads passages about people it never saw and answers from them
    (issue 15's goal: >= 0.9); without the passage the same questions are about chance; the world's own facts
    are partly recalled. Measured (seed 0, one thread, AVX512): in-context 0.955, closed-book on the same
    questions 0.035, on the world's people 0.835."""
    entry = pretraining.cached_base(pretraining.load_pretrain_config("world-micro"), progress=False)
    summary = json.loads((entry / "summary.json").read_text())
    assert summary["in_context_qa"] >= 0.9
    assert summary["closed_book_qa_unseen"] <= 0.15 < summary["closed_book_qa_world"]
