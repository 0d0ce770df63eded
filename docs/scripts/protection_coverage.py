"""Which of the base's world facts a sleep keeps: those its protection asks about, those of people it names, or all alike?

Sleep loses about half of the base's closed-book world knowledge over the stream (skill retention
`closed_book_qa_world`) although about half of protection's questions are about world people. This
reads back finished fact-stream runs of `docs/scripts/lm_table.py` and, for each sleep, rebuilds the
protection prompts that sleep drew (the same seed, with the slow model as it was then: the base, or the
previous experience's checkpoint, whose state also holds the rehearsal cues; the context fast memory
leaves the weights alone during wake). It sorts every world fact of the people pretraining asked about
(each attribute, question paraphrase 0) by what protection holds of it (`coverage`) and asks it
closed-book before the sleep and after it (its checkpoint). Of the facts known before, it reports the
share still known after, per group. The world's facts are the base's skill, not the stream's test probes.

    .venv/bin/python docs/scripts/protection_coverage.py [--rows "sleep (fast memory: context)"] [--seeds 0 1 2 3 4] [--block NAME]
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from somna.curricula.world import ATTRIBUTES, World, WorldConfig
from somna.learners.base import derive_seed
from somna.learners.text.seeding import SEEDING_SALT

from fact_probes import FactProbe, answered, asks, names, normalised, world_probe
from readback import Scores, cached_in_run, readback_args, rebuilt, write_row_table

GROUPS = ("asked", "named", "absent")
CACHE = "protection_coverage.json"


@functools.cache
def world_facts(base: str) -> list[FactProbe]:
    """Every attribute of the people the base was asked about in pretraining (its pretrain.yaml's world)."""
    spec = OmegaConf.load(Path(base) / "pretrain.yaml")
    world = World(WorldConfig(**spec.world))
    return [world_probe(person, attribute) for person in world.asked for attribute in ATTRIBUTES]


def coverage(texts: str, fact: FactProbe) -> str:
    """What protection's `texts` (normalised) hold of `fact`: "asked" (a question about this person and
    attribute, in any paraphrase), "named" (the person, not this question) or "absent"."""
    if asks(texts, fact):
        return "asked"
    return "named" if names(texts, fact) else "absent"


def kept_by_coverage(run_dir: Path, facts_at: Callable[[Any, list[Any], int], list[FactProbe]]) -> Scores:
    """Over one run's sleeps: per group (see `coverage`), the facts known before a sleep and the share kept after it.

    `facts_at(learner, experiences, index)` gives the facts asked around the sleep after experience `index`;
    before it the learner holds the previous checkpoint (the slow model that sleep's protection is drawn from).
    A fact is asked once per checkpoint: what a sleep's "after" answered is the next sleep's "before"."""
    run, learner, experiences = rebuilt(run_dir)
    stage = learner.sleep_stages["knowledge-seeding"]
    before_count, kept_count = dict.fromkeys(GROUPS, 0), dict.fromkeys(GROUPS, 0)
    answers: dict[FactProbe, float] = {}  # of the learner's current state

    def answered_now(facts: list[FactProbe]) -> list[float]:
        missing = [fact for fact in facts if fact not in answers]
        answers.update(zip(missing, answered(learner, missing)))
        return [answers[fact] for fact in facts]

    checkpoints = run.checkpoints()
    for checkpoint in checkpoints:
        facts = facts_at(learner, experiences, checkpoint.index)
        before = answered_now(facts)
        protect = stage.protection(learner, learner.frozen_copy(), derive_seed(learner.seed, checkpoint.index, SEEDING_SALT))
        texts = normalised(" ".join(protect.prompts + protect.completions))
        groups = [coverage(texts, fact) for fact in facts]
        learner.load_state_dict(checkpoint.load())
        answers.clear()
        after = answered_now(facts)
        for group, was, still in zip(groups, before, after):
            before_count[group] += was
            kept_count[group] += was and still
    sleeps = len(checkpoints)
    return {
        **{f"kept/{g}": kept_count[g] / before_count[g] if before_count[g] else float("nan") for g in GROUPS},
        **{f"known/{g}": before_count[g] / sleeps for g in GROUPS},
    }


@cached_in_run(CACHE)
def run_coverage(run_dir: Path) -> Scores:
    """`kept_by_coverage` of the base's world facts."""
    return kept_by_coverage(run_dir, lambda learner, _experiences, _index: world_facts(learner.config.model.base))


def with_overall(scores: dict[str, float]) -> dict[str, float]:
    """`scores` and "kept/all": the share of all facts known before a sleep that it kept (the groups pooled)."""
    known = {g: scores[f"known/{g}"] for g in GROUPS}
    kept = sum(scores[f"kept/{g}"] * known[g] for g in GROUPS if known[g])
    return scores | {"kept/all": kept / sum(known.values())}


def write_kept_table(args: argparse.Namespace, script: str, intro: str, facts: str, scores_of: Callable[[Path], Scores]) -> None:
    """Per row: the share of `facts` a sleep keeps, pooled (`with_overall`) and per coverage group, and how many it knew before."""
    write_row_table(
        args, script, intro,
        f"| row | {facts} kept by a sleep: all | protection asks this fact | names the person only | does not name the person "
        "| facts known before a sleep: asked | named only | not named |",
        ["kept/all"] + [f"kept/{g}" for g in GROUPS] + [f"known/{g}" for g in GROUPS],
        lambda run_dir: with_overall(scores_of(run_dir)),
        digits=lambda column: 0 if column.startswith("known/") else 3,
    )


def main() -> None:
    args = readback_args(__doc__, "protection_coverage", rows=["sleep (fast memory: context)"])
    write_kept_table(
        args, "protection_coverage.py",
        "Each sleep's facts pooled per seed. Facts: every attribute of the 100 world people pretraining asked about (700), closed-book.",
        "world facts", run_coverage,
    )


if __name__ == "__main__":
    main()
