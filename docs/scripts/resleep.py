"""Run one sleep of a finished fact-stream run again, with option overrides, and print what it logs on dev data.

For choosing a knowledge-seeding setting without a whole stream and without a test probe: the learner is
rebuilt from the run's config plus the overrides, loaded from the checkpoint before sleep `--sleep` (the
base for sleep 0), wakes on that experience and sleeps as the runner would (same phase seeds). Printed as
one JSON line: the student's dev exact match after the sleep (what knowledge seeding logs), how many of the
teacher's own closed-book questions it then answers as the teacher did (does it fit what it was shown?),
and the earlier experiences' dev exact match before and after the sleep (what it forgets).

    .venv/bin/python docs/scripts/resleep.py RUN_DIR --sleep 2 learner.sleep.options.knowledge-seeding.lr=0.01
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from somna.evals.rundir import load_run
from somna.learners.base import SleepContext, phase_seed
from somna.platform.builders import build_curriculum, build_learner, seed_everything
from somna.platform.config import load_config

from kernel_memory_probe import exact  # this script's folder is on sys.path when it runs
from seeding_coverage import sleep_pairs, teacher_matches


def dev_em(learner, rows: list[dict]) -> float:
    return sum(exact(learner, [r["prompt"] for r in rows], [r["answer"] for r in rows])) / len(rows) if rows else float("nan")


def resleep(run_dir: Path, sleep: int, overrides: list[str]) -> dict[str, float]:
    """The scores of sleep `sleep` of the run at `run_dir`, run again with `overrides` (see the module docstring)."""
    run = load_run(run_dir)
    cfg = load_config(str(run_dir / "config.yaml"), overrides)  # as `somna resume` reads it: keys added since take their defaults
    curriculum = build_curriculum(cfg)
    experiences = list(curriculum)

    learner, experience = build_learner(cfg, curriculum.info), experiences[sleep]
    if sleep:
        learner.load_state_dict(run.checkpoints()[sleep - 1].load())
    taught = sleep_pairs(learner, experience)  # the teacher's pairs, as the sleep will draw them (explicit seeds; the learner is not changed)
    earlier = [row for e in experiences[:sleep] for row in e.dev]
    before = dev_em(learner, earlier)
    seed_everything(phase_seed(int(cfg.seed), sleep, "wake"))
    learner.wake(experience)
    seed_everything(phase_seed(int(cfg.seed), sleep, "sleep"))
    logged = learner.sleep(SleepContext(experience=experience, num_experiences=len(experiences), seed=int(cfg.seed)))
    matches, asked = teacher_matches(learner, taught)
    return {
        "student_dev_em_after": logged["knowledge-seeding/student_dev_em_after"],
        "student = teacher on its questions": matches / asked,
        "earlier dev EM before": before,
        "earlier dev EM after": dev_em(learner, earlier),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--sleep", type=int, required=True, help="the experience whose sleep runs again (0-based)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. learner.sleep.options.knowledge-seeding.lr=0.01")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(json.dumps({"sleep": args.sleep, "overrides": args.overrides} | resleep(args.run_dir, args.sleep, args.overrides)))


if __name__ == "__main__":
    main()
