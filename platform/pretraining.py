"""`somna pretrain`: a base language model pretrained on the generated world, and the cache that lets a run name one.

A pretrain preset (platform/pretrain_presets/<name>.yaml, shipped as package data and listed by
`somna pretrain --help`; apart from the run presets of `somna presets`, because it configures a
model, not a run) is a `PretrainConfig`: the world (curricula/world.py), the tokenizer, the
SleepLM's sizes (learners/text/model.py), the loop (learners/text/pretrain.py) and the
evaluation. `pretrain_into` trains the tokenizer and the model and writes a base directory:

  config.json, model.safetensors     the model (save_pretrained)
  tokenizer.json, tokenizer_config.json ...   its tokenizer
  skills.json                        held-out probes of its skills (World.skill_probes)
  summary.json                       in_context_qa, closed_book_qa_unseen, closed_book_qa_world,
                                     closed_book_qa_told (exact match on `eval.probes` held-out items
                                     each, see World.skill_probes), params, tokens, minutes
                                     (wall clock of the loop), cpu_minutes (its CPU time), ...
  pretrain.yaml                      the resolved pretrain config
  loss.png                           the loss curve
  manifest.json                      sha256 of every file, written last (checked before any load)

A directory is written under a temporary name and renamed into place when complete, so a
crash never leaves one that looks finished. A text learner's `learner.model.base=<preset>`
resolves here (`resolve_base`, called by `build_learner`): the preset is pretrained once into
the user cache ($SOMNA_CACHE_DIR, else $XDG_CACHE_HOME/somna or ~/.cache/somna), in an entry
keyed by the preset's resolved config and CODE_VERSION, under a file lock (processes that want
the same base at once pretrain it once); later runs reuse it, and an entry that fails its
manifest check is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from somna.curricula.world import World, WorldConfig
from somna.learners.text.model import Architecture
from somna.learners.text.pretrain import PretrainOptions
from somna.platform.config import ConfigError, _merge_strict, parse_dotlist, parse_yaml

log = logging.getLogger(__name__)

PRESETS_DIR = Path(__file__).parent / "pretrain_presets"
CODE_VERSION = 2  # bump when the world, the model or the loop change what a preset produces: old cache entries are then unused
SUMMARY_KEYS = ("params", "tokens", "minutes", "in_context_qa", "closed_book_qa_unseen", "closed_book_qa_world", "closed_book_qa_told")
LEARNER_SKILLS = ("in_context_qa", "closed_book_qa_world")  # what a run scores for skill retention
SKILL_PROBES_SALT = 7  # the evaluation items' generator is seeded apart from the training stream


@dataclass
class TokenizerConfig:
    vocab_size: int = 512  # 3 specials + 256 bytes + learned merges
    documents: int = 5000  # world documents the merges are learned from


@dataclass
class EvalConfig:
    probes: int = 200  # held-out items per skill (summary.json, skills.json)
    batch_size: int = 100
    max_new_tokens: int = 8


@dataclass
class PretrainConfig:
    name: str = "world"  # names the cache entry (a preset's name by default)
    seed: int = 0  # the model's init and the document stream (the world has its own seed)
    threads: int = 1  # torch threads while pretraining; fixed, so a cached base holds the same floats whoever builds it
    world: WorldConfig = field(default_factory=WorldConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: Architecture = field(default_factory=Architecture)
    train: PretrainOptions = field(default_factory=PretrainOptions)
    eval: EvalConfig = field(default_factory=EvalConfig)


def preset_names() -> list[str]:
    return sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))


def load_pretrain_config(source: str, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """A pretrain preset's name or a YAML file, plus `key=value` overrides, validated; else a one-line ConfigError.

    A YAML file may start from another recipe with `extends: PRESET_OR_FILE` (a file path is relative to the
    extending file) and give only the keys that differ: the result, and so the cache key, is the same as the
    whole recipe written out. The name stays the extending file's stem."""
    *extended, own = recipe_layers(source)
    name = {"name": source if source in preset_names() else Path(source).stem}  # a `name:` of its own still wins
    cfg = _merge_strict(PretrainConfig, [*extended, name, own, parse_dotlist(list(overrides))], "")
    try:
        OmegaConf.to_object(cfg)  # runs each section's own checks
    except ValueError as error:
        raise ConfigError(str(error).strip().splitlines()[0]) from None
    if cfg.threads < 1 or cfg.eval.probes < 1 or cfg.tokenizer.documents < 1:
        raise ConfigError("threads, eval.probes and tokenizer.documents must be >= 1")
    return cfg


def recipe_layers(source: str, extended_by: tuple[Path, ...] = ()) -> list[dict[str, Any]]:
    """The key mappings that make up a preset or YAML recipe, the recipe it `extends` first; else a one-line ConfigError."""
    path = Path(source)
    if source in preset_names():
        path = PRESETS_DIR / f"{source}.yaml"
    elif path.suffix not in (".yaml", ".yml") and "/" not in source:
        raise ConfigError(f"unknown pretrain preset {source!r}; presets: {', '.join(preset_names())} (or a YAML file path)")
    elif not path.is_file():
        where = f" (extended by {extended_by[-1]})" if extended_by else ""
        raise ConfigError(f"pretrain config file not found: {source}{where}")
    if path.resolve() in extended_by:
        raise ConfigError(f"{source} extends itself: {' -> '.join(str(p) for p in (*extended_by, path.resolve()))}")
    data = parse_yaml(path.read_text(), source) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a YAML mapping of pretrain config keys")
    parent = data.pop("extends", None)
    if parent is None:
        return [data]
    if not isinstance(parent, str) or not parent:
        raise ConfigError(f"{source}: extends must name a pretrain preset or a YAML file, got {parent!r}")
    parent = parent if parent in preset_names() else str(path.parent / parent)
    return [*recipe_layers(parent, (*extended_by, path.resolve())), data]


def config_digest(cfg: DictConfig) -> str:
    """What a cache entry is keyed by: the resolved config and CODE_VERSION."""
    payload = json.dumps({"config": OmegaConf.to_container(cfg, resolve=True), "code": CODE_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def pretrain_into(cfg: DictConfig, directory: Path, progress: bool = True) -> dict[str, Any]:
    """Pretrain the tokenizer and the model of `cfg` and write the base directory (see the module docstring)."""
    import numpy as np
    import torch

    from somna.evals.plots import loss_curve
    from somna.learners.text.bases import SUMMARY, save_base, write_manifest
    from somna.learners.text.encoding import score_model
    from somna.learners.text.model import SleepLM, SleepLMConfig
    from somna.learners.text.pretrain import pretrain
    from somna.learners.text.tokenizer import train_tokenizer

    spec: PretrainConfig = OmegaConf.to_object(cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(spec.threads)
    try:
        world = World(spec.world)
        corpus = world.pretraining_documents(np.random.default_rng((spec.seed, 1)), spec.tokenizer.documents)
        tokenizer = train_tokenizer(corpus, spec.tokenizer.vocab_size)
        torch.manual_seed(spec.seed)
        ids = {f"{name}_token_id": getattr(tokenizer, f"{name}_token_id") for name in ("pad", "bos", "eos")}
        model = SleepLM(SleepLMConfig(vocab_size=len(tokenizer), **ids, **asdict(spec.model)))
        result = pretrain(model, tokenizer, world.pretraining_chains, spec.train, spec.seed, progress)
        probes = world.skill_probes(np.random.default_rng((spec.seed, SKILL_PROBES_SALT)), spec.eval.probes)
        scores = {
            name: score_model(model, tokenizer, rows, batch_size=spec.eval.batch_size, max_new_tokens=spec.eval.max_new_tokens, max_length=spec.train.max_length)["exact_match"]
            for name, rows in probes.items()
        }
    finally:
        torch.set_num_threads(threads)
    summary = {
        "name": spec.name,
        **scores,
        "params": sum(p.numel() for p in model.parameters()),
        "tokens": result.tokens,
        "minutes": round(result.seconds / 60, 2),
        "cpu_minutes": round(result.cpu_seconds / 60, 2),
        "steps": spec.train.steps,
        "final_loss": float(np.mean(result.losses[-50:])),
        "threads": spec.threads,
        "probes": spec.eval.probes,
    }
    directory.mkdir(parents=True, exist_ok=True)
    save_base(directory, model, tokenizer, {name: probes[name] for name in LEARNER_SKILLS})
    (directory / SUMMARY).write_text(json.dumps(summary, indent=1) + "\n")
    (directory / "pretrain.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    loss_curve(result.losses, directory / "loss.png", f"somna pretrain {spec.name}: {summary['params']:,} parameters")
    write_manifest(directory)
    return summary


def write_whole(target: Path, write: Callable[[Path], Any]) -> None:
    """Run `write(folder)` on a fresh temporary sibling of `target` and rename it to `target` when it returns."""
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        write(folder)
        os.replace(folder, target)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def cache_root() -> Path:
    if os.environ.get("SOMNA_CACHE_DIR"):
        return Path(os.environ["SOMNA_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "somna"


def cache_entry(cfg: DictConfig) -> Path:
    return cache_root() / "bases" / f"{cfg.name}-{config_digest(cfg)}"


def cached_base(cfg: DictConfig, progress: bool = True) -> Path:
    """The cache entry of `cfg`, pretrained first if it is missing or damaged."""
    from filelock import FileLock

    from somna.learners.text.bases import manifest_problem

    entry = cache_entry(cfg)
    entry.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{entry}.lock"):
        if entry.is_dir():
            problem = manifest_problem(entry)
            if problem is None:
                return entry
            log.warning("cached base is damaged (%s); pretraining it again", problem)
            shutil.rmtree(entry)
        log.warning("pretraining base %r once; it is cached in %s", cfg.name, entry)
        started = time.perf_counter()
        write_whole(entry, lambda folder: pretrain_into(cfg, folder, progress))
        log.warning("pretrained base %r in %.1f minutes", cfg.name, (time.perf_counter() - started) / 60)
    return entry


def resolve_base(learner: DictConfig) -> DictConfig:
    """`learner` with `model.base` naming a directory: a pretrain preset or a pretrain YAML file is pretrained once
    and cached, a relative path is made absolute (Ray workers may start elsewhere); hub names pass through."""
    base = OmegaConf.select(learner, "model.base", default=None)
    if not isinstance(base, str):
        return learner
    path = Path(base).expanduser()
    recipe = path.is_file() and path.suffix in (".yaml", ".yml")
    if path.exists() and not recipe:
        resolved = str(path.resolve())
    elif recipe or base in preset_names():
        resolved = str(cached_base(load_pretrain_config(base)))
    else:
        return learner
    learner = learner.copy()
    learner.model.base = resolved
    return learner
