"""What the model dreamed: the best and worst rewarded dreams of each sleep, read from a run directory.

The `dreaming` sleep stage appends one JSON line per dream to
`artifacts/exp-NNNN/dreams.jsonl` (fields: experience, round, passage, dream,
score = gradient norm, kept = chosen for a LoRA trial, reward = 1 if tau
improved, improvement = the real-valued change of tau; with a teacher's verifier
also teacher_answer and student_answer). Only kept dreams were
scored by a reward, so only they are ranked; the rest just count as generated.
A QA dream ("... A: answer") is *grounded* when its answer is words of the passage
it was dreamed from: a faithful self-edit; a model that misread, or dreamed of
someone else, answers from elsewhere (and fitting that teaches a wrong fact).
It is an upper bound on faithfulness: an answer that names another fact of the
same passage still counts as grounded.
The reader is pure file reading (evals imports no other room) and tolerates
torn lines: they are skipped and named in `warnings`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from somna.evals.rundir import ARTIFACTS_DIR

DREAMS_FILE = "dreams.jsonl"
ARTIFACTS_GLOB = f"{ARTIFACTS_DIR}/exp-*"


@dataclass
class Dream:
    experience: int
    round: int
    passage: str
    text: str
    score: float
    kept: bool
    reward: float
    improvement: float
    consolidated: bool | None = None  # fitted after the rounds; None in files written before the stage recorded it

    @property
    def grounded(self) -> bool:
        """A QA dream whose answer occurs, as whole words, in its passage (case and punctuation ignored)."""
        _, marker, answer = self.text.rpartition("A:")
        words = _words(answer)
        return bool(marker and words) and f" {words} " in f" {_words(self.passage)} "


def distinct_texts(dreams: list[Dream]) -> int:
    """How many different dreams these are, case and punctuation ignored (ReST-EM's M-step can make the
    generator repeat one rewarded dream)."""
    return len({_words(d.text) for d in dreams})


def _words(text: str) -> str:
    """SQuAD-style normalisation, as learners/text/rewards.normalize_answer (evals imports no other room, so it is restated)."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


@dataclass
class ExperienceDreams:
    """All dreams of one experience's sleep, with the ranking that the report shows."""

    experience: int
    dreams: list[Dream]

    @property
    def rewarded_trials(self) -> list[Dream]:
        """The dreams that went through a LoRA trial and so carry a reward."""
        return [d for d in self.dreams if d.kept]

    def counts(self) -> dict[str, int]:
        rewarded = [d for d in self.rewarded_trials if d.reward > 0]
        return {
            "generated": len(self.dreams),
            "grounded": sum(d.grounded for d in self.dreams),
            "kept": len(self.rewarded_trials),
            "rewarded": len(rewarded),
            "rewarded_grounded": sum(d.grounded for d in rewarded),
        }

    def consolidated(self) -> list[Dream]:
        """The dreams the stage fits after its rounds, as recorded; in older files, the last round's rewarded ones."""
        if any(d.consolidated is not None for d in self.dreams):
            return [d for d in self.dreams if d.consolidated]
        last = max((d.round for d in self.dreams), default=0)
        return [d for d in self.rewarded_trials if d.reward > 0 and d.round == last]

    def best_and_worst(self, k: int) -> tuple[list[Dream], list[Dream]]:
        """(k best, k worst) kept dreams, best listed best first and worst listed worst first.

        Ordering key, higher is better: reward, then real-valued improvement of
        tau, then gradient score (a dream that taught more counts as better on a
        full tie). With fewer than 2k kept dreams the ranking is split in halves
        (the odd one out goes to best), so no dream is shown twice and a
        two-dream sleep shows one best and one worst rather than two "best".
        """
        ranked = sorted(self.rewarded_trials, key=lambda d: (d.reward, d.improvement, d.score), reverse=True)
        best = ranked[: min(k, (len(ranked) + 1) // 2)]
        worst = ranked[len(best) :][::-1][:k]
        return best, worst


@dataclass
class RunDreams:
    experiences: list[ExperienceDreams] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def read_dreams(run_dir: str | Path) -> RunDreams:
    """Every experience's dreams.jsonl under `run_dir`, in experience order; missing files mean no dreaming."""
    result = RunDreams()
    for directory in sorted(Path(run_dir).glob(ARTIFACTS_GLOB)):
        file = directory / DREAMS_FILE
        if not file.is_file():
            continue
        dreams = _read_file(file, result.warnings)
        if dreams:
            result.experiences.append(ExperienceDreams(_experience_index(directory, dreams), dreams))
    result.experiences.sort(key=lambda e: e.experience)
    return result


def _read_file(file: Path, warnings: list[str]) -> list[Dream]:
    dreams = []
    for number, line in enumerate(file.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            dreams.append(_parse(json.loads(line)))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            warnings.append(f"{file}:{number}: unreadable dream line skipped (torn write?)")
    return dreams


def _parse(row: dict[str, Any]) -> Dream:
    return Dream(
        experience=int(row.get("experience", -1)),
        round=int(row.get("round", 0)),
        passage=str(row.get("passage", "")),
        text=str(row["dream"]),
        score=float(row.get("score", 0.0)),
        kept=bool(row.get("kept", False)),
        reward=float(row.get("reward", 0.0)),
        improvement=float(row.get("improvement", 0.0)),
        consolidated=bool(row["consolidated"]) if "consolidated" in row else None,
    )


def _experience_index(directory: Path, dreams: list[Dream]) -> int:
    """The experience the records name; the exp-NNNN folder name when they do not."""
    named = dreams[0].experience
    number = directory.name.removeprefix("exp-")
    return named if named >= 0 or not number.isdigit() else int(number)


def shorten(text: str, limit: int = 160) -> str:
    """One line of at most `limit` characters: table cells cannot hold newlines, and dreams can ramble."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"
