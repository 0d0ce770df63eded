"""Where a sleep's expert acts after the stream: on its own experience, on earlier ones, on the base's world facts?

With the context fast memory, wake leaves the weights alone and a sleep trains only its new expert
(one per sleep, in that sleep's receiving CMS level), so everything an earlier experience loses afterwards
is done by the experts later sleeps added. This reads back finished fact-stream runs of
`docs/scripts/lm_table.py`, loads each run's last checkpoint and, at the answer positions of
(question, answer) pairs, records for every expert its router gate and how large its gated output
is next to the level's own MLP output (‖gate·expert(x)‖ / ‖mlp(x)‖). Pairs: each experience's dev
questions (never its test probes) and world facts of the people pretraining asked about. It sorts
them by when the expert was made: on its own experience's questions, on those of experiences before
it (what it can make the model forget), on the world facts. Then it asks the earlier experiences'
dev questions closed-book with the later experts switched off (mask 0) and on: the difference is the
forgetting those experts cause. Where the router was trained (knowledge seeding's route_weight), it
also reads each sleep's gate on the protection rows it was trained to stay shut on, the closed-book
ones and the reading ones apart: does the router separate old from new, or one form from another?

    .venv/bin/python docs/scripts/router_reach.py --rows "sleep +own questions as cues, 4× seeding steps" [--seeds 0 1 2 3 4] [--block NAME]
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch

from somna.learners.base import derive_seed
from somna.learners.text.encoding import IGNORE, encode_pairs, on_device
from somna.learners.text.experts import ExpertMLP, cms_blocks, recorded_outputs
from somna.learners.text.seeding import SEEDING_SALT, closed_book
from somna.learners.text.sleep import receiver_level

from kernel_memory_probe import exact  # this script's folder is on sys.path when it runs
from readback import cached_in_run, readback_args, rebuilt, write_row_table
from protection_coverage import world_facts

CACHE = "router_reach.json"
WORLD_FACTS = 200
GROUPS = ("own", "earlier", "world")


Expert = tuple[ExpertMLP, int]  # (CMS level, expert index in it)


def experts_by_sleep(learner, sleeps: int) -> list[Expert]:
    """The expert each sleep made, in sleep order: each level unlocks its experts in order."""
    blocks = cms_blocks(learner.model)
    used = {level: 0 for level in range(len(blocks))}
    made = []
    for sleep in range(sleeps):
        level = receiver_level(learner.config.receiver, len(blocks), sleep)
        made.append((blocks[level], blocks[level].unlocked()[used[level]]))
        used[level] += 1
    return made


@torch.no_grad()
def reach(learner, experts: list[Expert], prompts: list[str], answers: list[str]) -> tuple[list[float], list[float]]:
    """Per expert: its mean gate and its mean relative gated output at the answer positions of the pairs."""
    batch = encode_pairs(learner.tokenizer, prompts, answers, learner.config.max_length)
    scored = (batch["labels"][:, 1:] != IGNORE).to(next(learner.model.parameters()).device)
    with ExitStack() as stack:
        record = lambda module: stack.enter_context(recorded_outputs(module))  # noqa: E731
        bases = [record(block.base) for block, _ in experts]
        gates = [record(block.experts[e].gate) for block, e in experts]
        outputs = [record(block.experts[e]) for block, e in experts]
        learner.model(**on_device(batch, learner.model))
    at = lambda recorded: recorded[0][:, :-1][scored]  # noqa: E731 (the rows of the scored positions)
    opened = [torch.sigmoid(at(g))[:, 0] for g in gates]
    return (
        [float(g.mean()) for g in opened],
        [float((g * at(o).norm(dim=-1) / at(b).norm(dim=-1)).mean()) for g, o, b in zip(opened, outputs, bases)],
    )


@contextmanager
def switched_off(experts: list[Expert]) -> Iterator[None]:
    """The experts masked (never computed) while active."""
    for block, e in experts:
        block.expert_mask[e] = 0.0
    try:
        yield
    finally:
        for block, e in experts:
            block.expert_mask[e] = 1.0


def protection_gates(learner, checkpoints: list) -> dict[str, float]:
    """Each sleep's new expert, right after its sleep: its mean gate on that sleep's protection rows, the
    closed-book ones ("Q: ... A:" -> answer, shaped like the stream's questions) and the reading ones (a
    passage -> a question and its answer) apart. Rebuilds each sleep's protection as `protection_coverage`
    does (same seed, the slow model as it was); leaves the learner at the last checkpoint."""
    stage = learner.sleep_stages["knowledge-seeding"]
    gates: dict[str, list[float]] = {"closed": [], "reading": []}
    for sleep, checkpoint in enumerate(checkpoints):
        protect = stage.protection(learner, learner.frozen_copy(), derive_seed(learner.seed, checkpoint.index, SEEDING_SALT))
        learner.load_state_dict(checkpoint.load())
        expert = experts_by_sleep(learner, sleep + 1)[sleep]
        pairs = list(zip(protect.prompts, protect.completions))
        for kind, rows in (("closed", [r for r in pairs if closed_book(r[0])]), ("reading", [r for r in pairs if not closed_book(r[0])])):
            gates[kind].append(reach(learner, [expert], [p for p, _ in rows], [c for _, c in rows])[0][0])
    return {f"gate/protection {kind}": sum(values) / len(values) for kind, values in gates.items()}


@cached_in_run(CACHE)
def run_reach(run_dir: Path) -> dict[str, float]:
    """One run's scores (see the module docstring)."""
    run, learner, experiences = rebuilt(run_dir)
    protected = protection_gates(learner, run.checkpoints())  # leaves the learner at the last checkpoint
    made = experts_by_sleep(learner, len(experiences))
    facts = [(fact.prompt, fact.answer) for fact in world_facts(learner.config.model.base)[:WORLD_FACTS]]
    dev = [([r["prompt"] for r in e.dev], [r["answer"] for r in e.dev]) for e in experiences]
    pooled: dict[str, list[tuple[float, float]]] = {g: [] for g in GROUPS}
    for j, (prompts, answers) in enumerate(dev):
        gates, sizes = reach(learner, made, prompts, answers)
        pooled["own"].append((gates[j], sizes[j]))
        pooled["earlier"] += list(zip(gates[j + 1 :], sizes[j + 1 :]))
    gates, sizes = reach(learner, made, *map(list, zip(*facts)))
    pooled["world"] += list(zip(gates, sizes))
    caused = []
    for j, (prompts, answers) in enumerate(dev[:-1]):
        with_later = exact(learner, prompts, answers)
        with switched_off(made[j + 1 :]):
            without_later = exact(learner, prompts, answers)
        caused.append(sum(without_later) / len(prompts) - sum(with_later) / len(prompts))
    scores = {
        **{f"gate/{g}": sum(p[0] for p in pairs) / len(pairs) for g, pairs in pooled.items()},
        **{f"size/{g}": sum(p[1] for p in pairs) / len(pairs) for g, pairs in pooled.items()},
        "forgetting caused": sum(caused) / len(caused),
        **protected,
    }
    return scores


def main() -> None:
    args = readback_args(__doc__, "router_reach")
    write_row_table(
        args, "router_reach.py",
        "Gates at the scored positions: on each sleep's protection rows right after that sleep; on every experience's "
        f"dev questions and {WORLD_FACTS} world facts (answer positions) at the run's last checkpoint.",
        "| row | gate after its sleep: protection's closed-book rows | protection's reading rows "
        "| gate after the stream: own experience | earlier experiences | world facts "
        "| ‖gate·output‖/‖mlp‖: own | earlier | world | forgetting the later experts cause (dev EM) |",
        ["gate/protection closed", "gate/protection reading"] + [f"gate/{g}" for g in GROUPS] + [f"size/{g}" for g in GROUPS] + ["forgetting caused"],
        run_reach,
    )


if __name__ == "__main__":
    main()
