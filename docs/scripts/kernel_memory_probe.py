"""How far the `kernel` fast memory carries a passage: a kernel base's teacher's exact match on dev questions
by what its mixers' carried state holds.

The sleep's teacher with `learner.fast_memory=kernel` answers from the state wake left after reading all
of the experience's passages in order. This separates the two ways that can fail: the base may not read a
passage across a document boundary at all (the asked passage alone in the state, k = 0), or later passages
may overwrite it (the asked passage, then k other passages of the same experience). Reference rows: no
memory (closed book), the passage in context (the `context` fast memory's teacher), and the state exactly as
wake writes it. Dev questions of the shipped `fact-stream` preset only, never a test probe; every
experience of each seed. `--bases` names the bases, one column each: pretrain presets or YAML files whose
mixers are memory kernels (`world-deltanet`, pretrained one document per sequence; the experiments of
docs/pretrain_experiments/: the same recipe with Titans mixers, and DeltaNet pretrained on sequences of
several documents with recall questions).

    .venv/bin/python docs/scripts/kernel_memory_probe.py [--bases world-deltanet ...] [--seeds 0 1 2] [--after 0 1 3 7 19] [--block kernel_probe]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch

from somna.evals.stats import mean_ci
from somna.learners.text.encoding import greedy_answers, with_passage
from somna.learners.text.rewards import exact_match
from somna.platform.builders import build_curriculum, build_learner
from somna.platform.config import load_config
from somna.platform.provenance import provenance_line

from lm_table import write_between_markers  # this script's folder is on sys.path when it runs


def exact(learner, prompts: list[str], answers: list[str]) -> list[float]:
    predictions = greedy_answers(learner.model, learner.tokenizer, prompts, learner.config.eval_max_new_tokens)
    return [float(exact_match(p, a)) for p, a in zip(predictions, answers)]


def holding(learner, passages: list[str], ask: Callable[[], list[float]]) -> list[float]:
    """`ask()` with the kernel state holding `passages` (read in this order), emptied afterwards."""
    learner.fast_memory.write(learner, passages, 0)
    try:
        return ask()
    finally:
        learner.fast_memory.reset(learner)


def seed_scores(base: str, seed: int, after: list[int]) -> dict[str, float]:
    """Mean dev exact match per condition over every experience of the stream of `seed`, on `base`."""
    cfg = load_config("fact-stream", ["learner=sleep", f"learner.model.base={base}", "learner.fast_memory=kernel", f"seed={seed}"])
    curriculum = build_curriculum(cfg)
    learner = build_learner(cfg, curriculum.info)
    generator = torch.Generator().manual_seed(seed)
    scores: dict[str, list[float]] = {}
    for experience in curriculum:
        passages, rows = list(experience.train["text"]), list(experience.dev)
        answers = [row["answer"] for row in rows]
        scores.setdefault("no memory (closed book)", []).extend(exact(learner, [r["prompt"] for r in rows], answers))
        scores.setdefault("passage in context", []).extend(exact(learner, [with_passage(r["prompt"], r["context"]) for r in rows], answers))
        for k in after:
            label = "state: the asked passage alone" if k == 0 else f"state: the asked passage, then {k} other passage{'s' if k > 1 else ''}"
            for row in rows:
                others = [p for p in passages if p != row["context"]]
                order = torch.randperm(len(others), generator=generator).tolist()[:k]
                scores.setdefault(label, []).extend(holding(learner, [row["context"], *(others[i] for i in order)], lambda: exact(learner, [row["prompt"]], [row["answer"]])))
        scores.setdefault("state: all passages, as wake writes them", []).extend(holding(learner, passages, lambda: exact(learner, [r["prompt"] for r in rows], answers)))
    return {label: sum(values) / len(values) for label, values in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bases", nargs="+", default=["world-deltanet"], help="one column each")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--after", type=int, nargs="+", default=[0, 1, 3, 7, 19])
    parser.add_argument("--out", type=Path, default=Path("docs/lm_results.md"))
    parser.add_argument("--block", default="kernel_probe", help="write between lm_table:BLOCK markers")
    args = parser.parse_args()
    torch.set_num_threads(1)
    per_seed = {base: [seed_scores(base, seed, args.after) for seed in args.seeds] for base in args.bases}
    labels = list(per_seed[args.bases[0]][0])
    lines = [
        f"Seeds {', '.join(map(str, args.seeds))}; mean ± 95% CI over seeds of the dev exact match (all experiences); "
        f"produced by `docs/scripts/kernel_memory_probe.py --bases {' '.join(args.bases)} --block {args.block}`.",
        "",
        f"| what the teacher holds | {' | '.join(f'`{Path(base).stem}`' for base in args.bases)} |",
        f"|---|{'---:|' * len(args.bases)}",
        *(f"| {label} | {' | '.join(mean_ci([scores[label] for scores in per_seed[base]]).format(3) for base in args.bases)} |" for label in labels),
        "",
        provenance_line(),
    ]
    report = "\n".join(lines)
    print(report)
    write_between_markers(args.out, report, args.block)


if __name__ == "__main__":
    main()
