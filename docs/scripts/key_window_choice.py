"""Which key window: how well a keyed gate's queries summed over W tokens tell a sleep's new questions from old inputs.

`key_gate_reach.py` found each keyed expert open on about a fifth of the world's answer positions: at an answer
position the level's input holds the question's form more than whom it asks about. A key window
(`learner.model.key_window`, `ExpertMLP.key_queries`) also lets the tokens before the position count. This reads
back finished runs of a keyed-gate row of `docs/scripts/lm_table.py` and, for every sleep, at its receiving level
of the slow model before it (the level's input does not depend on the window, so one run serves every W), builds
the gate each W would have built:

  keys        the key queries over W tokens at the answer positions of the pairs the sleep trained on (rebuilt as
              it drew them, as `key_separation.py` does)
  own         the experience's dev questions, but those the teacher wrote word for word: where it should open
  earlier     the earlier experiences' dev questions                          } where it should not; the window is
  protection  the sleep's protection rows (the slow model's own generations)   } chosen on these two (dev)
  world       200 world facts: described, never used to choose (skill retention's world probes ask these people)

Per W, averaged over the run's sleeps: the AUC of own against each old group, the share of each old group open at
the threshold that keeps nine tenths of own open, and that threshold (what key_threshold would have to be).

    .venv/bin/python docs/scripts/key_window_choice.py --rows "sleep +own questions as cues, keyed gate" [--seeds 0 1] [--block NAME]
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from somna.learners.base import derive_seed
from somna.learners.text.experts import ExpertMLP, cms_blocks
from somna.learners.text.seeding import SEEDING_SALT
from somna.learners.text.sleep import receiver_level
from somna.platform.provenance import provenance_line

from key_separation import KEEP_OWN_OPEN, auc, level_inputs, nearest_key, open_at  # this script's folder is on sys.path when it runs
from lm_table import write_between_markers
from protection_coverage import world_facts
from readback import cached_in_run, cell, readback_args, rebuilt
from router_reach import WORLD_FACTS
from seeding_coverage import sleep_pairs

CACHE = "key_window_choice.json"
WINDOWS = (1, 2, 3, 4, 8)
OLD = ("earlier", "protection", "world")


@contextmanager
def key_window(block: ExpertMLP, window: int) -> Iterator[None]:
    """While active, `block` builds its key queries over `window` tokens."""
    kept, block.key_window = block.key_window, window
    try:
        yield
    finally:
        block.key_window = kept


def questions(rows: list[dict[str, str]]) -> tuple[list[str], list[str]]:
    """(prompts, answers) of dev rows."""
    return [r["prompt"] for r in rows], [r["answer"] for r in rows]


@cached_in_run(CACHE)
def run_windows(run_dir: Path) -> dict[str, float]:
    """"W/auc/group", "W/open/group" and "W/threshold", each the mean over the run's sleeps that have the group."""
    run, learner, experiences = rebuilt(run_dir)
    stage = learner.sleep_stages["knowledge-seeding"]
    world = world_facts(learner.config.model.base)[:WORLD_FACTS]
    scores: dict[str, list[float]] = {}
    blocks = cms_blocks(learner.model)
    for sleep, checkpoint in enumerate(run.checkpoints()):
        experience = experiences[checkpoint.index]
        block = blocks[receiver_level(learner.config.receiver, len(blocks), sleep)]
        taught = sleep_pairs(learner, experience)  # the learner is still the slow model of this sleep
        asked = set(taught.prompts)
        protection = stage.protection(learner, learner.frozen_copy(), derive_seed(learner.seed, experience.index, SEEDING_SALT))
        groups = {  # (prompts, answers) of each group
            "own": questions([r for r in experience.dev if r["prompt"] not in asked]),
            "protection": (protection.prompts, protection.completions),
            "world": ([f.prompt for f in world], [f.answer for f in world]),
        }
        if checkpoint.index:
            groups["earlier"] = questions([row for e in experiences[: checkpoint.index] for row in e.dev])
        for window in WINDOWS:
            with key_window(block, window), torch.no_grad():
                keys = level_inputs(learner, block, taught.prompts, taught.completions, as_queries=True)
                nearest = {group: nearest_key(keys, level_inputs(learner, block, *pairs, as_queries=True)) for group, pairs in groups.items()}
            scores.setdefault(f"{window}/threshold", []).append(float(torch.quantile(nearest["own"], 1 - KEEP_OWN_OPEN)))
            for group in OLD:
                if group in nearest:
                    scores.setdefault(f"{window}/auc/{group}", []).append(auc(nearest["own"], nearest[group]))
                    scores.setdefault(f"{window}/open/{group}", []).append(open_at(nearest["own"], nearest[group]))
        learner.load_state_dict(checkpoint.load())
    return {name: sum(values) / len(values) for name, values in scores.items()}


def main() -> None:
    args = readback_args(__doc__, "key_window_choice")
    columns = [f"auc/{group}" for group in OLD] + [f"open/{group}" for group in OLD] + ["threshold"]
    command = " ".join(["docs/scripts/key_window_choice.py --rows", *map(repr, args.rows), "--seeds", *map(str, args.seeds), "--block", args.block])
    lines = [
        f"Seeds {', '.join(map(str, args.seeds))}; mean ± 95% CI over seeds; produced by `{command}` from the `lm_table.py` "
        "runs. At each sleep's receiving level, before the sleep; averaged over the run's sleeps (earlier: sleeps 2–4). "
        "Keys and queries summed over W tokens, at answer positions; own: the experience's dev questions but those the "
        "teacher wrote word for word; earlier: the earlier experiences' dev questions; protection: the sleep's protection "
        f"rows; world: {WORLD_FACTS} world facts (described, not used to choose).",
        "",
        "| row | W | AUC own vs old: earlier | protection | world "
        f"| old open when {KEEP_OWN_OPEN:.0%} of own is open: earlier | protection | world | that threshold |",
        "|---|---:|" + "---:|" * len(columns),
    ]
    for row in args.rows:
        per_seed = [run_windows(args.runs / row.replace(" ", "_") / f"seed{seed}") for seed in args.seeds]
        for window in WINDOWS:
            cells = [cell([scores[f"{window}/{column}"] for scores in per_seed], 3) for column in columns]
            lines.append(f"| {row} | {window} | {' | '.join(cells)} |")
    report = "\n".join(lines + ["", provenance_line()])
    print(report)
    write_between_markers(args.out, report, args.block)


if __name__ == "__main__":
    main()
