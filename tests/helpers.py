"""Small builders shared by tests (not fixtures: plain functions tests import)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from somna.platform.config import load_config

FAST_DIGITS = ["learner.hidden=[32]", "learner.epochs=1", "logging.progress=false"]


def fast_config(*overrides: str, preset: str = "split-digits") -> DictConfig:
    """split-digits with a tiny MLP and one epoch: a whole run takes about a second inline."""
    return load_config(preset, [*FAST_DIGITS, *overrides])


def events_without_timing(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl minus what legitimately differs between identical runs (timings, node ids)."""
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for event in events:
        event.pop("wall_s", None)
        event.pop("node_id", None)
        for key in [k for k in event.get("metrics", {}) if k.endswith("_s")]:
            event["metrics"].pop(key)
    return events


def small_world_tokenizer() -> Any:
    """A 400-token BPE trained in seconds on 300 documents of a small world."""
    import numpy as np

    from somna.curricula.world import World, WorldConfig
    from somna.learners.text.tokenizer import train_tokenizer

    return train_tokenizer(World(WorldConfig(num_entities=20, num_towns=5)).pretraining_documents(np.random.default_rng(0), 300), 400)


def save_tiny_llama(directory: Path, layers: int = 3) -> Path:
    """A tiny Llama-style causal LM built from a transformers config, with a BPE tokenizer (no chat template,
    as many hub tokenizers), saved with save_pretrained: an offline stand-in for a Hugging Face model."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = small_world_tokenizer()
    tokenizer.chat_template = None
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=128, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
