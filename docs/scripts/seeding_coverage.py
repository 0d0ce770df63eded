"""Which new facts a sleep's teacher teaches, and which of them the student learns.

After knowledge seeding the student answers about two thirds of the newest experience's dev questions while
its teacher (the passage in context) answers nine tenths. The student is taught only through the teacher's
own QA: it reads each passage and writes `questions_per_passage` questions, which it answers with the passage
in context. A fact the teacher never asks about is taught only by the passage restatements. This reads back
finished fact-stream runs of `docs/scripts/lm_table.py` (context fast memory) and, for each sleep, rebuilds
the pairs that sleep trained on (the same seed, the slow model as it was: the base or the previous
experience's checkpoint; the context teacher is that model reading the passage). It sorts each of the
experience's dev facts by what those pairs hold of it: the teacher asked it (any question paraphrase of this
person and attribute) and answered right, asked it and answered otherwise, or never asked it. Then it reports
the student's closed-book dev exact match after that sleep (its checkpoint) per group, and how many of the
teacher's own questions the student answers as the teacher did (does it fit what it was shown?).
Dev questions only; never a test probe.

    .venv/bin/python docs/scripts/seeding_coverage.py --rows "sleep +own questions as cues, 4× seeding steps" [--seeds 0 1 2 3 4] [--block NAME]
"""

from __future__ import annotations

from pathlib import Path

from somna.learners.base import derive_seed
from somna.learners.text.rewards import exact_match
from somna.learners.text.seeding import SEEDING_SALT, SeedingData, closed_book

from fact_probes import FactProbe, answered, asks, normalised, read_probe
from kernel_memory_probe import exact  # this script's folder is on sys.path when it runs
from readback import cached_in_run, readback_args, rebuilt, write_row_table

CACHE = "seeding_coverage.json"
GROUPS = ("taught", "asked otherwise", "not asked")


def group_of(fact: FactProbe, taught: SeedingData) -> str:
    """"taught" (a question of `taught` asks it, answered right), "asked otherwise" (asked, never answered right) or "not asked"."""
    answers = [c for p, c in zip(taught.prompts, taught.completions) if closed_book(p) and asks(normalised(p), fact)]
    if not answers:
        return "not asked"
    return "taught" if any(exact_match(answer, fact.answer) for answer in answers) else "asked otherwise"


def sleep_pairs(learner, experience) -> SeedingData:
    """The pairs the sleep after `experience` trained on, drawn again from `learner` as it was before that sleep
    (same seed; the context fast memory's teacher is that model reading the passage)."""
    stage = learner.sleep_stages["knowledge-seeding"]
    return stage.new_knowledge(learner, learner.frozen_copy(), experience, derive_seed(learner.seed, experience.index, SEEDING_SALT))


def teacher_matches(learner, taught: SeedingData) -> tuple[float, int]:
    """Of the teacher's own closed-book questions in `taught`: how many the learner answers as the teacher did, of how many."""
    own = [(p, c) for p, c in zip(taught.prompts, taught.completions) if closed_book(p)]
    return sum(exact(learner, [p for p, _ in own], [c for _, c in own])), len(own)


@cached_in_run(CACHE)
def run_coverage(run_dir: Path) -> dict[str, float]:
    """Over one run's sleeps (pooled): the share of dev facts per group, the student's dev EM after the sleep per
    group, and its EM against the teacher's answers on the teacher's own questions."""
    run, learner, experiences = rebuilt(run_dir)
    checkpoints = run.checkpoints()
    counts, known = dict.fromkeys(GROUPS, 0), dict.fromkeys(GROUPS, 0.0)
    fitted, questions = 0.0, 0
    for checkpoint in checkpoints:
        experience = experiences[checkpoint.index]
        taught = sleep_pairs(learner, experience)
        facts = [read_probe(row) for row in experience.dev]
        groups = [group_of(fact, taught) for fact in facts]
        learner.load_state_dict(checkpoint.load())
        after = answered(learner, facts)
        for group, score in zip(groups, after):
            counts[group] += 1
            known[group] += score
        matches, asked = teacher_matches(learner, taught)
        fitted += matches
        questions += asked
    total = sum(counts.values())
    return {
        **{f"share/{g}": counts[g] / total for g in GROUPS},
        **{f"em/{g}": known[g] / counts[g] if counts[g] else float("nan") for g in GROUPS},
        "em/all": sum(known.values()) / total,
        "fit": fitted / questions,
        "questions": questions / len(checkpoints),
    }


def main() -> None:
    args = readback_args(__doc__, "seeding_coverage")
    write_row_table(
        args, "seeding_coverage.py",
        "Each sleep's dev facts (50 per experience) pooled per seed; the teacher's pairs rebuilt as the sleep drew them.",
        "| row | dev facts the teacher taught | asked, answered otherwise | never asked "
        "| student dev EM after the sleep: all | taught | asked otherwise | never asked "
        "| student = teacher on the teacher's questions | teacher's questions per sleep |",
        [f"share/{g}" for g in GROUPS] + ["em/all"] + [f"em/{g}" for g in GROUPS] + ["fit", "questions"],
        run_coverage,
        digits=lambda column: 0 if column == "questions" else 3,
    )


if __name__ == "__main__":
    main()
