"""What a text learner starts from: a base causal LM, its tokenizer, and the skills it was pretrained for.

`learner.model.base` names one of
  * a directory written by `somna pretrain` (somna's SleepLM, its tokenizer, `skills.json`,
    `summary.json`, `manifest.json`);
  * a pretrain preset ("world", "world-micro"): the platform pretrains it once, caches it and hands
    the learner the cached directory (platform/pretraining.py);
  * any Hugging Face causal LM, by hub name or local directory (`AutoModelForCausalLM` and its
    `AutoTokenizer`); it has no skills file, so runs on it report no skill retention.
A somna base's files are checked against its manifest (sha256 of every file, written last) before
anything is read: a damaged or unfinished directory is an error, never half-loaded.

`skills.json` holds the held-out probes of the base's own skills ({name: [rows]}, rows in the
columns of somna.curricula.text with complete prompts): a learner scores them before and after its
stream (skill retention).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from somna.learners.text.tokenizer import prepare_tokenizer

MANIFEST = "manifest.json"
SKILLS = "skills.json"
SUMMARY = "summary.json"
Rows = list[dict[str, str]]


@dataclass
class Base:
    model: Any  # a transformers causal LM
    tokenizer: Any  # its PreTrainedTokenizerFast, prepared for the learners and TRL
    skills: dict[str, Rows] = field(default_factory=dict)


def file_digests(directory: Path) -> dict[str, str]:
    """sha256 of every file under `directory` but the manifest, by relative path."""
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }


def write_manifest(directory: Path) -> None:
    """Seal a base directory: its manifest lists every file's sha256 and is written last."""
    (directory / MANIFEST).write_text(json.dumps(file_digests(directory), indent=1, sort_keys=True) + "\n")


def manifest_problem(directory: Path) -> str | None:
    """Why the somna base in `directory` cannot be trusted (no manifest, a missing, extra or changed file), else None."""
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return f"{directory}: no {MANIFEST} (not a finished `somna pretrain` output)"
    try:
        expected = json.loads(manifest.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return f"{manifest}: unreadable ({error})"
    found = file_digests(directory)
    changed = sorted(name for name in set(expected) | set(found) if expected.get(name) != found.get(name))
    return f"{directory}: {', '.join(changed)} missing or changed since `somna pretrain` wrote it" if changed else None


def save_base(directory: Path, model: Any, tokenizer: Any, skills: dict[str, Rows]) -> None:
    """Write the model (config.json + model.safetensors), the tokenizer files and skills.json (not yet sealed)."""
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / SKILLS).write_text(json.dumps(skills, indent=1) + "\n")


def is_somna_base(path: Path) -> bool:
    return (path / MANIFEST).is_file() or (path / SKILLS).is_file()


def load_base(name_or_path: str) -> Base:
    """The base named by `learner.model.base` (see the module docstring); a one-line ValueError when it cannot be."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # a learner is rebuilt for every evaluation: no bar each time
    path = Path(name_or_path).expanduser()
    if name_or_path.startswith((".", "/", "~")) and not path.exists():
        raise ValueError(f"learner.model.base: {name_or_path} does not exist (give a `somna pretrain` directory, a pretrain preset or a Hugging Face causal LM)")
    if path.is_dir() and is_somna_base(path):
        problem = manifest_problem(path)
        if problem:
            raise ValueError(f"learner.model.base: {problem}")
        from somna.learners.text.model import SleepLM
        from transformers import PreTrainedTokenizerFast

        model = SleepLM.from_pretrained(path)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
        return Base(model.eval(), prepare_tokenizer(tokenizer), json.loads((path / SKILLS).read_text()))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(str(path) if path.is_dir() else name_or_path, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(path) if path.is_dir() else name_or_path)
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"learner.model.base: cannot load {name_or_path!r}: not a `somna pretrain` directory, not a pretrain preset "
            f"(`somna pretrain --help` lists them) and not a Hugging Face causal LM ({first})"
        ) from None
    return Base(model.eval(), prepare_tokenizer(tokenizer))
