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
