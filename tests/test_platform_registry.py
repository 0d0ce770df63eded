"""Registries: decorator registration, entry-point plugins, a broken plugin named while others load."""

from __future__ import annotations

import importlib.metadata
import sys

import pytest

from somna.platform.registry import ModalityRegistry, Registry, UnknownNameError


def test_register_get_and_unknown_name_lists_choices():
    registry = Registry("widget", "somna.test-widgets")

    @registry.register("spoon")
    class Spoon:
        """Stirs things."""

    assert registry.get("spoon") is Spoon
    assert registry.describe() == {"spoon": "Stirs things."}
    with pytest.raises(UnknownNameError, match=r"unknown widget 'fork'; choose one of: spoon"):
        registry.get("fork")
    with pytest.raises(ValueError, match="already registered"):
        registry.add("spoon", object())


def test_learners_resolve_by_modality():
    registry = ModalityRegistry("learner", "somna.test-learners", default_modality="vector")

    @registry.register("echo")
    class VectorEcho: ...

    @registry.register("echo", modality="text")
    class TextEcho: ...

    assert registry.resolve("echo", "vector") is VectorEcho
    assert registry.resolve("echo", "text") is TextEcho
    with pytest.raises(UnknownNameError, match="no implementation for audio curricula; it supports: text, vector"):
        registry.resolve("echo", "audio")


def test_an_any_modality_variant_serves_every_modality_unless_one_is_specific():
    registry = ModalityRegistry("sleep stage", "somna.test-stages", default_modality="any")

    @registry.register("nap")
    class AnyNap: ...

    @registry.register("nap", modality="text")
    class TextNap: ...

    assert registry.resolve("nap", "vector") is AnyNap and registry.resolve("nap", "audio") is AnyNap
    assert registry.resolve("nap", "text") is TextNap


def test_entry_point_plugins_load_and_a_broken_one_is_named(tmp_path, monkeypatch):
    (tmp_path / "good_plugin.py").write_text("class Good:\n    '''A plugin learner.'''\n")
    (tmp_path / "bad_plugin.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    group = "somna.test-plugins"
    points = [
        importlib.metadata.EntryPoint(name="good", value="good_plugin:Good", group=group),
        importlib.metadata.EntryPoint(name="bad", value="bad_plugin:Thing", group=group),
    ]
    real = importlib.metadata.entry_points
    monkeypatch.setattr(
        importlib.metadata, "entry_points", lambda **kw: points if kw.get("group") == group else real(**kw)
    )
    registry = Registry("plugin", group)
    with pytest.warns(UserWarning, match="'bad'.*boom at import"):
        names = registry.names()
    assert names == ["good"]
    assert registry.get("good").__name__ == "Good"
    assert "boom at import" in registry.plugin_errors["bad"]
    sys.modules.pop("good_plugin", None)


def test_deferred_modules_are_imported_only_when_their_name_is_needed(tmp_path, monkeypatch):
    registry = ModalityRegistry("learner", "somna.test-deferred", default_modality="vector")
    (tmp_path / "heavy_text_learner.py").write_text(
        "import builtins\nbuiltins._somna_heavy_imported = True\n"
        "from somna.platform.registry import Registry\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    @registry.register("echo")
    class VectorEcho: ...

    registry.defer("heavy_text_learner", "echo")
    import builtins

    assert registry.resolve("echo", "vector") is VectorEcho
    assert not hasattr(builtins, "_somna_heavy_imported")
    assert "echo" in registry.names()
    with pytest.raises(UnknownNameError, match="it supports: vector"):
        registry.resolve("echo", "text")  # imported now, but it registered nothing for text
    assert builtins._somna_heavy_imported
    del builtins._somna_heavy_imported
    sys.modules.pop("heavy_text_learner", None)
