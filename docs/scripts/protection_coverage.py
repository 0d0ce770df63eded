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

import re
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from somna.curricula.world import ATTRIBUTES, Entity, World, WorldConfig, question
from somna.learners.base import derive_seed
from somna.learners.text.seeding import SEEDING_SALT

from kernel_memory_probe import exact  # this script's folder is on sys.path when it runs
from readback import cached_in_run, readback_args, rebuilt, write_row_table


def world_of(learner) -> World:
    """The world the learner's base was pretrained on (its pretrain.yaml)."""
    spec = OmegaConf.load(Path(learner.config.model.base) / "pretrain.yaml")
    return World(WorldConfig(**spec.world))


@dataclass(frozen=True)
class Fact:
    person: Entity
    attribute: str

    @property
    def probe(self) -> tuple[str, str]:
        """(closed-book prompt, answer), question paraphrase 0."""
        return question(self.person, self.attribute, 0)


GROUPS = ("asked", "named", "absent")
CACHE = "protection_coverage.json"


def known(learner, facts: list[Fact]) -> list[float]:
    """Closed-book exact match (1 or 0) of the learner's current model on each fact."""
    prompts, answers = zip(*(fact.probe for fact in facts))
    return exact(learner, list(prompts), list(answers))


def coverage(texts: str, fact: Fact) -> str:
    """What protection's `texts` (lowercased, whitespace-normalised) hold of `fact`: "asked" (a question about
    this person and attribute, in any paraphrase), "named" (the person, not this question) or "absent"."""
    if any(q.format(e=fact.person.name).lower() in texts for q in ATTRIBUTES[fact.attribute].questions):
        return "asked"
    return "named" if re.search(rf"\b{fact.person.name.lower()}\b", texts) else "absent"


@cached_in_run(CACHE)
def run_coverage(run_dir: Path) -> dict[str, float]:
    """Over one run's sleeps: per group (see `coverage`), the facts known before a sleep and the share kept after it."""
    run, learner, _ = rebuilt(run_dir)
    world = world_of(learner)
    facts = [Fact(person, attribute) for person in world.asked for attribute in ATTRIBUTES]
    stage = learner.sleep_stages["knowledge-seeding"]
    before_count, kept_count = dict.fromkeys(GROUPS, 0), dict.fromkeys(GROUPS, 0)
    before = known(learner, facts)
    checkpoints = run.checkpoints()
    for checkpoint in checkpoints:
        protect = stage.protection(learner, learner.frozen_copy(), derive_seed(learner.seed, checkpoint.index, SEEDING_SALT))
        texts = " ".join(" ".join(text.lower().split()) for text in protect.prompts + protect.completions)
        groups = [coverage(texts, fact) for fact in facts]
        learner.load_state_dict(checkpoint.load())
        after = known(learner, facts)
        for group, was, still in zip(groups, before, after):
            before_count[group] += was
            kept_count[group] += was and still
        before = after
    sleeps = len(checkpoints)
    scores = {
        **{f"kept/{g}": kept_count[g] / before_count[g] if before_count[g] else float("nan") for g in GROUPS},
        **{f"known/{g}": before_count[g] / sleeps for g in GROUPS},
    }
    return scores


def with_overall(scores: dict[str, float]) -> dict[str, float]:
    """`scores` and "kept/all": the share of all facts known before a sleep that it kept (the groups pooled)."""
    known = {g: scores[f"known/{g}"] for g in GROUPS}
    kept = sum(scores[f"kept/{g}"] * known[g] for g in GROUPS if known[g])
    return scores | {"kept/all": kept / sum(known.values())}


def main() -> None:
    args = readback_args(__doc__, "protection_coverage", rows=["sleep (fast memory: context)"])
    write_row_table(
        args, "protection_coverage.py",
        "Each sleep's facts pooled per seed. Facts: every attribute of the 100 world people pretraining asked about (700), closed-book.",
        "| row | world facts kept by a sleep: all | protection asks this fact | names the person only | does not name the person "
        "| facts known before a sleep: asked | named only | not named |",
        ["kept/all"] + [f"kept/{g}" for g in GROUPS] + [f"known/{g}" for g in GROUPS],
        lambda run_dir: with_overall(run_coverage(run_dir)),
        digits=lambda column: 0 if column.startswith("known/") else 3,
    )


if __name__ == "__main__":
    main()
