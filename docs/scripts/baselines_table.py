"""The six digit baselines x {class-IL split, task-IL split, domain-IL permuted} on one seed, as markdown.

Runs each learner with its Config defaults through a minimal in-process loop
(wake -> evaluate every experience -> accuracy matrix -> somna.evals.metrics),
prints the table and writes it to docs/baselines_seed0.md. It is the
cross-check of the CLI's own table: `somna run` should give the same numbers.

    .venv/bin/python docs/scripts/baselines_table.py [--seed 0] [--out docs/baselines_seed0.md]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from somna.curricula.digits import PermutedDigits, SplitDigits
from somna.evals import metrics
from somna.platform.registry import LEARNERS

import somna.learners  # noqa: F401  (registers the baselines)

BASELINES = ("finetune", "ewc", "lwf", "der", "replay", "joint")
SETTINGS = {  # column label -> (curriculum class, scenario, experiences)
    "class-IL split-digits": (SplitDigits, "class", 5),
    "task-IL split-digits": (SplitDigits, "task", 5),
    "domain-IL permuted-digits": (PermutedDigits, "domain", 5),
    # 5 x 2-class task-IL is nearly saturated (finetune ~0.99); 5-class tasks show task-IL forgetting.
    "task-IL split-digits 2x5": (SplitDigits, "task", 2),
}


def run(learner_name: str, curriculum_cls: type, scenario: str, num_experiences: int, seed: int) -> dict[str, float]:
    """Accuracy matrix of one run, summarized by ACC/BWT/FWT/forgetting."""
    config = OmegaConf.structured(curriculum_cls.Config)
    config.num_experiences = num_experiences
    curriculum = curriculum_cls(config, scenario=scenario, seed=seed)
    learner_cls = LEARNERS.resolve(learner_name, "vector")
    learner = learner_cls(OmegaConf.structured(learner_cls.Config), curriculum.info, seed)
    b = np.array([learner.evaluate(e)["accuracy"] for e in curriculum])
    R = np.zeros((len(curriculum), len(curriculum)))
    for i, experience in enumerate(curriculum):
        learner.wake(experience)
        R[i] = [learner.evaluate(e)["accuracy"] for e in curriculum]
    return metrics.summarize(R, b)


def table(seed: int) -> str:
    header = "| learner | " + " | ".join(f"{label} ACC | BWT" for label in SETTINGS) + " |"
    lines = [header, "|---|" + "---:|---:|" * len(SETTINGS)]
    for name in BASELINES:
        cells = []
        for curriculum_cls, scenario, num_experiences in SETTINGS.values():
            summary = run(name, curriculum_cls, scenario, num_experiences, seed)
            cells += [f"{summary['acc']:.3f}", f"{summary['bwt']:+.3f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "baselines_seed0.md")
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny MLP: extra threads only contend for the shared CPUs (measured 30-60x slower)
    start = time.perf_counter()
    body = table(args.seed)
    text = (
        f"# Digit baselines, seed {args.seed}\n\n"
        "Each learner with its Config defaults (MLP 64-256-256-10, Adam lr 1e-3, 5 epochs per experience, "
        "batch 32; replay/der buffer 200; ewc lambda 1000, gamma 1; lwf alpha 1, T 2; der alpha 0.3, beta 1). "
        "5 experiences (2 classes each in split-digits) unless the column says 2x5; ACC = mean final accuracy, "
        "BWT = mean (final - just-learned) accuracy on earlier experiences.\n"
        f"Produced by `docs/scripts/baselines_table.py --seed {args.seed}` "
        f"({time.perf_counter() - start:.0f} s on CPU).\n\n{body}\n"
    )
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
