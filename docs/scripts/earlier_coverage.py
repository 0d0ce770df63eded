"""Which facts of the earlier experiences a sleep keeps: those its protection asks about, or the others?

BWT on the fact stream is what the sleeps after an experience cost it. Nothing of an earlier experience is
stored; what protects it is the slow model's answers to its own earlier closed-book questions, kept as cues
(`knowledge-seeding.rehearse_questions`), among protection's other rows. This reads back finished
fact-stream runs of `docs/scripts/lm_table.py` and, for every sleep after the first, rebuilds the
protection rows that sleep drew (as `protection_coverage.py` does: the same seed, the previous checkpoint as
the slow model, whose state holds the cues). It sorts every dev fact of the experiences before it into
protection asks this fact (any question paraphrase), names the person only, or does not name the person,
and asks each closed-book before the sleep and after it. Of the facts known before, it reports the share
still known after, per group. Dev questions only; never a test probe.

    .venv/bin/python docs/scripts/earlier_coverage.py --rows "sleep +own questions as cues" [--seeds 0 1 2 3 4] [--block NAME]
"""

from __future__ import annotations

from pathlib import Path

from fact_probes import read_probe
from protection_coverage import kept_by_coverage, write_kept_table
from readback import Scores, cached_in_run, readback_args

CACHE = "earlier_coverage.json"


@cached_in_run(CACHE)
def run_coverage(run_dir: Path) -> Scores:
    """`kept_by_coverage` of the dev facts of every experience before each sleep's own."""
    return kept_by_coverage(
        run_dir, lambda _learner, experiences, index: [read_probe(row) for experience in experiences[:index] for row in experience.dev]
    )


def main() -> None:
    args = readback_args(__doc__, "earlier_coverage")
    write_kept_table(
        args, "earlier_coverage.py",
        "Each sleep's facts pooled per seed. Facts: the dev questions of the experiences before the sleep's own "
        "(50 each; 300 over the 2nd to 4th sleep), closed-book. \"Facts known before\" is per sleep (the first has none).",
        "earlier facts", run_coverage,
    )


if __name__ == "__main__":
    main()
