"""Config resolution: presets, overrides, group switches and one-line errors."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from somna.platform.config import ConfigError, load_config, preset_names, run_name


def test_preset_loads_with_learner_and_curriculum_schemas():
    cfg = load_config("split-digits")
    assert cfg.curriculum.name == "split-digits"
    assert cfg.learner.name == "finetune"
    assert list(cfg.learner.hidden) == [256, 256]
    assert cfg.scenario == "class"
    assert run_name(cfg) == "split-digits-finetune-s0"
    assert "split-digits" in preset_names() and "permuted-digits" in preset_names()


def test_switching_learner_keeps_shared_fields_and_takes_new_defaults():
    cfg = load_config("split-digits", ["learner=replay", "learner.buffer=500", "seed=3"])
    assert cfg.learner.name == "replay"
    assert cfg.learner.buffer == 500
    assert cfg.learner.epochs == 5  # from the preset, a field replay also has
    assert cfg.seed == 3


def test_yaml_file_source(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("seed: 7\ncurriculum: {name: permuted-digits, num_experiences: 3}\nlearner: {name: finetune}\n")
    cfg = load_config(str(path))
    assert (cfg.seed, cfg.curriculum.num_experiences, cfg.scenario) == (7, 3, "domain")


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["learner=nope"], "unknown learner 'nope'; choose one of:"),
        (["lerner=replay"], "unknown key 'lerner'; valid keys here:"),
        (["learner.bufer=3", "learner=replay"], "unknown key 'learner.bufer'; valid keys here: batch_size, buffer"),
        (["learner.epochs=many"], "bad value for 'learner.epochs'"),
        (["curriculum=nope"], "unknown curriculum 'nope'"),
        (["scenario=domain"], "split-digits supports class, task"),
        (["executor=spark"], "choose one of ray, inline"),
        (["resources.wake.num_cpus=0"], "must be > 0"),
        (["novalue"], "must look like key=value"),
    ],
)
def test_bad_overrides_are_one_line_errors(overrides, fragment):
    with pytest.raises(ConfigError) as error:
        load_config("split-digits", overrides)
    message = str(error.value)
    assert fragment in message
    assert "\n" not in message


def test_missing_and_non_yaml_sources(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "absent.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_config(str(scalar))
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("no-such-preset")


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = load_config("split-digits", ["learner=replay", "learner.buffer=50"])
    path = tmp_path / "config.yaml"
    path.write_text(OmegaConf.to_yaml(cfg))
    again = load_config(str(path))
    assert OmegaConf.to_container(again) == OmegaConf.to_container(cfg)


def test_switching_learner_drops_the_presets_sleep_stages():
    cfg = load_config("split-digits-sleep", ["learner=finetune"])
    assert list(cfg.learner.sleep.stages) == []
