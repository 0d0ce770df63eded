"""The knowledge-incorporation table (the shape of the paper's Table 3) from a `somna sweep --variants` folder.

    somna sweep fact-stream-dreaming --variants docs/dreaming_variants.yaml seed=0,1,2,3,4 executor=inline --out runs/dreaming
    .venv/bin/python docs/scripts/dreaming_table.py runs/dreaming [--out docs/dreaming_results.md]

Columns, mean ± 95% CI over seeds: "single passage batch" = mean_j R[j, j], the
no-context QA accuracy on an experience's passages right after reading them (the
sweep's `plasticity`); "after the stream" = ACC, the final row's mean (the
continued-pretraining setting); BWT; skill retention (the pretrained base's own
skills after the stream ÷ before it); "grounded dreams" = the share of a run's
dreams whose answer is words of the passage they were dreamed from, over all
dreams / over the rewarded ones (evals/dreams.py), which shows whether the
reward picks faithful self-edits; "dreams fitted per sleep" = the dreams the stage consolidates
(the last round's rewarded ones, or with `consolidate=every-passage` its verified fresh dreams about
every passage or sentence) and how many of them differ (ReST-EM can make the generator repeat one). "base" is the pretrained base before the
stream: the runs' `init` row. Rows follow the variants file's order. A second
table pairs rows by seed (PAIRS): what dreaming and each of its parts add, with
the interval of the per-seed difference. Two dev tables follow (dev questions, never
the test probes): the dev exact match before → after each sleep's dreaming, and, for
the sleep rows, where it comes from: the teacher's (the ceiling), the student's before
and after knowledge seeding and after dreaming — the headroom seeding leaves to dreaming. The tables replace the text between the
`lm_table:BLOCK` markers of --out (docs/lm_results.md; --block, default `dreaming`).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml

from somna.evals import metrics
from somna.evals.compare import find_runs
from somna.evals.dreams import ExperienceDreams, distinct_texts, read_dreams
from somna.evals.rundir import load_run
from somna.platform.provenance import provenance_line

from lm_table import fmt, paired_rows, write_between_markers  # this script's folder is on sys.path when it runs


def grounded_shares(sleeps: list[ExperienceDreams]) -> tuple[float, float]:
    """(grounded ÷ generated, grounded ÷ rewarded) over a run's sleeps."""
    counts = [e.counts() for e in sleeps]
    total = {key: sum(c[key] for c in counts) for key in counts[0]}
    return total["grounded"] / max(total["generated"], 1), total["rewarded_grounded"] / max(total["rewarded"], 1)


def fitted_per_sleep(sleeps: list[ExperienceDreams]) -> tuple[float, float]:
    """Dreams the stage fitted after its rounds, per sleep: (all, distinct), averaged over a run's sleeps."""
    fitted = [e.consolidated() for e in sleeps]
    return float(np.mean([len(d) for d in fitted])), float(np.mean([distinct_texts(d) for d in fitted]))


def dream_cells(runs: list) -> str:
    """The grounded-dreams and dreams-fitted cells, mean ± CI over the runs that dreamed ("—" when none did);
    each run's dreams are read once."""
    dreamed = [sleeps for sleeps in (read_dreams(run.path).experiences for run in runs) if sleeps]
    if not dreamed:
        return "— | —"
    cells = []
    for summary in (grounded_shares, fitted_per_sleep):
        values = [summary(sleeps) for sleeps in dreamed]
        cells.append(f"{fmt([v[0] for v in values])} / {fmt([v[1] for v in values])}")
    return " | ".join(cells)


COLUMNS = ("single passage batch", "after the stream (ACC)", "BWT", "skill retention")
# (row, the row it is compared with): what dreaming, each of its parts and the 4-level CMS add, paired by seed
PAIRS = [
    ("seal", "finetune-no-dream"),
    ("sleep", "seal"),
    ("sleep", "sleep-no-dreaming"),
    ("sleep", "sleep-no-gradient-selection"),
    ("sleep", "sleep-no-random-expert"),
    ("sleep-4-level-cms", "sleep"),
    ("seal-grounded", "seal"),
    ("seal-grounded", "finetune-no-dream"),
    ("sleep-grounded", "sleep"),
    ("sleep-grounded", "seal-grounded"),
    ("seal-grounded-every-passage", "seal-grounded"),
    ("seal-grounded-every-passage", "finetune-no-dream"),
    ("seal-grounded-every-passage-no-m-step", "seal-grounded-every-passage"),
    ("seal-grounded-every-passage-no-m-step", "finetune-no-dream"),
    ("seal-grounded-every-passage-no-anchors", "seal-grounded-every-passage"),
    ("seal-grounded-every-passage-no-anchors", "finetune-no-dream"),
    ("sleep-grounded-every-passage", "sleep-grounded"),
    ("sleep-grounded-every-passage", "seal-grounded-every-passage"),
    ("seal-documents", "finetune-no-dream"),  # what a self-edit can add: the consolidation steps alone, ...
    ("seal-dev-answers", "seal-documents"),  # ... a correct QA line about every fact beside them, ...
    ("seal-dev-answers", "finetune-no-dream"),
    ("seal-dev-answers-no-anchors", "seal-dev-answers"),
    ("seal-grounded-every-passage-no-rounds", "seal-documents"),  # ... the untrained generator's verified dreams, ...
    ("seal-grounded-every-passage", "seal-grounded-every-passage-no-rounds"),  # ... and what ReST-EM's rounds add to them
    ("seal-grounded-sentences", "seal-grounded-every-passage-no-rounds"),  # a dream about every sentence
    ("seal-grounded-sentences", "finetune-no-dream"),
    ("sleep-grounded-sentences", "sleep-grounded-every-passage"),
    ("sleep-grounded-sentences", "seal-grounded-sentences"),
    ("seal-grounded-sentences-rounds", "seal-grounded-sentences"),
    ("sleep-keyed-sentences", "seal-grounded-sentences"),
    ("sleep-keyed-sentences", "finetune-no-dream"),
    ("sleep-grounded-sentences-no-random-expert", "sleep-grounded-sentences"),
    ("sleep-grounded-sentences-no-random-expert", "seal-grounded-sentences"),
    ("sleep-grounded-sentences-no-random-expert", "sleep-no-dreaming"),  # what dreaming adds to sleep, ...
    ("sleep-no-teacher-qa", "sleep-no-teacher-qa-no-dreaming"),  # ... when seeding distils no QA of the teacher's own, ...
    ("sleep-no-dreaming", "sleep-no-teacher-qa-no-dreaming"),  # ... and what that QA adds to seeding
    ("sleep-keyed-sentences", "sleep-keyed-no-dreaming"),
    ("sleep-sentences-protected-fit-256-at-0.02", "sleep-no-dreaming"),  # dreams fitted as seeding fits its pairs
    ("sleep-sentences-protected-fit-256-at-0.02", "sleep-grounded-sentences-no-random-expert"),
    ("sleep-sentences-protected-fit-256-at-0.02", "seal-grounded-sentences"),
    ("sleep-keyed-protected-fit-256-at-0.01", "sleep-keyed-no-dreaming"),  # dreaming on the keyed row, ...
    ("sleep-keyed-teacher-verified-fit-256-at-0.01", "sleep-keyed-no-dreaming"),  # ... with the teacher's verifier
    ("sleep-keyed-teacher-verified-fit-256-at-0.01", "sleep-keyed-protected-fit-256-at-0.01"),
    ("sleep-keyed-teacher-verified-answers-fit-256-at-0.01", "sleep-keyed-no-dreaming"),  # ... fitting their answers alone
    ("sleep-keyed-teacher-verified-answers-fit-256-at-0.01", "sleep-keyed-teacher-verified-fit-256-at-0.01"),
    ("sleep-keyed-teacher-verified-answers-fit-256-at-0.01", "sleep-keyed-sentences"),
    ("sleep-keyed-teacher-verified-answers-fit-256-at-0.01", "seal-grounded-sentences"),
    ("sleep-keyed-seeding-as-shipped-no-dreaming", "seal-grounded-sentences"),  # the keyed gate with seeding as shipped, ...
    ("sleep-keyed-seeding-as-shipped-protected-fit-256-at-0.02", "sleep-keyed-seeding-as-shipped-no-dreaming"),  # ... its dreaming
    ("sleep-keyed-seeding-as-shipped-teacher-verified-answers-fit-256-at-0.02", "sleep-keyed-seeding-as-shipped-no-dreaming"),
    ("sleep-keyed-seeding-as-shipped-teacher-verified-answers-fit-256-at-0.02", "seal-grounded-sentences"),
]


DEV_KEYS = ("dreaming/student_dev_em_before", "dreaming/student_dev_em_after")


def sleep_metrics(run) -> list[dict[str, float]]:
    """The metrics each of a run's sleeps logged, in order."""
    return [event.get("metrics") or {} for event in run.events if event.get("event") == "sleep"]


def dev_by_sleep(run) -> list[tuple[float, float]]:
    """(dev exact match before, after) the dreaming stage, sleep by sleep, as the run logged them ([] before it did)."""
    return [(m[DEV_KEYS[0]], m[DEV_KEYS[1]]) for m in sleep_metrics(run) if DEV_KEYS[0] in m]


def dev_table(runs: dict[str, list], order: list[str]) -> list[str]:
    """The experience's dev exact match before → after each sleep's dreaming, mean over seeds, for the rows that logged it."""
    lines = []
    for label in order:
        logged = [dev_by_sleep(run) for run in runs[label]]
        if not logged or not all(logged):
            continue
        cells = [f"{np.mean([s[j][0] for s in logged]):.3f} → {np.mean([s[j][1] for s in logged]):.3f}" for j in range(min(map(len, logged)))]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    if not lines:
        return []
    width = lines[0].count("→")
    header = [
        "", "The experience's dev exact match (its dev questions, closed-book) before → after each sleep's dreaming stage, mean over the seeds:", "",
        f"| row | {' | '.join(f'sleep {j + 1}' for j in range(width))} |", "|---|" + "---:|" * width,
    ]
    return header + lines


SEEDING_KEYS = (  # a sleep's dev exact match through knowledge seeding (the teacher's: with its fast memory, the ceiling seeding distils)
    ("teacher (fast memory)", "knowledge-seeding/teacher_dev_em"),
    ("before seeding", "knowledge-seeding/student_dev_em_before"),
    ("after seeding", "knowledge-seeding/student_dev_em_after"),
)
STAGE_NAMES = [name for name, _ in SEEDING_KEYS] + ["after dreaming"]


def stage_means(run) -> list[float] | None:
    """A run's dev exact match at each of STAGE_NAMES, mean over its sleeps; None unless every sleep logged its seeding's
    (a sleep without a dreaming stage ends at "after seeding": its "after dreaming" is that)."""
    sleeps = sleep_metrics(run)
    if not sleeps or any(key not in m for m in sleeps for _, key in SEEDING_KEYS):
        return None
    points = [[m[key] for _, key in SEEDING_KEYS] + [m.get(DEV_KEYS[1], m[SEEDING_KEYS[-1][1]])] for m in sleeps]
    return [float(np.mean(column)) for column in zip(*points)]


def stage_table(runs: dict[str, list], order: list[str]) -> list[str]:
    """Where a sleep's dev exact match comes from: the headroom knowledge seeding leaves to dreaming, mean ± CI over seeds."""
    lines = []
    for label in order:
        logged = [stage_means(run) for run in runs[label]]
        if logged and all(v is not None for v in logged):
            gap = [v[0] - v[2] for v in logged]
            lines.append(f"| {label} | {' | '.join(fmt(list(c)) for c in zip(*logged))} | {fmt(gap)} |")
    if not lines:
        return []
    return [
        "", "The experience's dev exact match through each sleep, mean over its sleeps (closed-book, but for the teacher, which answers with its fast memory):", "",
        f"| row | {' | '.join(STAGE_NAMES)} | left to dreaming (teacher − after seeding) |", "|---|" + "---:|" * (len(STAGE_NAMES) + 1), *lines,
    ]


def scores(run) -> list[float]:
    """A run's values of COLUMNS."""
    R = run.square()
    return [metrics.plasticity(R), metrics.acc(R), metrics.bwt(R), run.summary.get("skill_retention", float("nan"))]


def finished_runs(sweep_dir: Path, order: list[str], seeds: list[int] | None = None) -> dict[str, list]:
    """The finished runs of the variants named in `order` (of `seeds` only, when given), by variant."""
    runs: dict[str, list] = defaultdict(list)
    for path in find_runs([sweep_dir]):
        run = load_run(path)
        if run.summary is not None and run.config.get("variant") in order and (seeds is None or run.config["seed"] in seeds):
            runs[run.config["variant"]].append(run)
    return runs


def table(sweep_dir: Path, variants_file: Path, seeds: list[int] | None = None) -> str:
    order = list(yaml.safe_load(variants_file.read_text()))
    runs = finished_runs(sweep_dir, order, seeds)
    missing = [label for label in order if not runs.get(label)]
    if missing:
        raise SystemExit(f"no finished runs for variant(s) {', '.join(missing)} in {sweep_dir}")
    by_seed = {label: {run.config["seed"]: scores(run) for run in runs[label]} for label in order}
    seeds = sorted({seed for group in by_seed.values() for seed in group})
    base = [fmt([float(np.mean(run.baseline)) for run in runs[order[0]]])] * 2
    lines = [
        f"Seeds {', '.join(map(str, seeds))}; mean ± 95% CI (Student t); `somna sweep fact-stream-dreaming --variants {variants_file}`.",
        "",
        f"| knowledge incorporation | {' | '.join(COLUMNS)} | grounded dreams (all / rewarded) | dreams fitted per sleep (all / distinct) |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| base | {' | '.join(base)} | — | — | — | — |",
    ]
    for label in order:
        columns = zip(*by_seed[label].values())
        lines.append(f"| {label} | {' | '.join(fmt(list(c)) for c in columns)} | {dream_cells(runs[label])} |")
    lines += paired_rows(by_seed, PAIRS, COLUMNS)
    lines += dev_table(runs, order)
    lines += stage_table(runs, order)
    threads = {run.config["resources"]["threads"] for group in runs.values() for run in group}
    if len(threads) == 1:
        torch.set_num_threads(int(threads.pop()))  # the runs' thread count, so that the provenance line names it
    return "\n".join([*lines, "", provenance_line()])


def sweep_folder_cli(make_table: Callable[[Path, Path, list[int] | None], str], description: str, block: str) -> None:
    """The command line of the scripts that read a `somna sweep --variants` folder: print the table and write
    it between the `lm_table:BLOCK` markers of --out."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--variants", type=Path, default=Path("docs/dreaming_variants.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", help="read only these seeds' runs (a choice made on some seeds' dev split)")
    parser.add_argument("--out", type=Path, default=Path("docs/lm_results.md"))
    parser.add_argument("--block", default=block, help="the lm_table:BLOCK markers of --out to write between")
    args = parser.parse_args()
    report = make_table(args.sweep_dir, args.variants, args.seeds)
    print(report)
    write_between_markers(args.out, report, args.block)


def main() -> None:
    sweep_folder_cli(table, __doc__.splitlines()[0], "dreaming")


if __name__ == "__main__":
    main()
