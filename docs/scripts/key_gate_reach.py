"""What a keyed gate still lets through: on the base's world facts, is a lost fact one where an expert's gate opened?

Reads back finished runs of a keyed-gate row of `docs/scripts/lm_table.py` (`learner.model.expert_keys`) and
asks the model after the whole stream 200 world facts (the people the base was asked about in pretraining, as
`key_separation.py` does; no test probe). Sleep changes nothing but its experts, and a shut gate adds exactly
zero, so an expert can only change a fact's answer where its gate opens. Each fact is read along the base's own
path (its prompt and the base's greedy answer, re-encoded), at the positions that predict the answer's tokens,
in every CMS level; per run:

  known                 the share of the facts the base answers (exact match)
  open, per expert      the share of those facts' answer positions where one expert's gate opens (mean over experts)
  open, any expert      the share of those facts with an answer position where some expert's gate opens
  kept when open        of those, the share the final model still answers
  kept when shut        the same for the facts where no gate opens at an answer position (a prompt position may
                        still open one)
  kept                  of the facts the base answered, the share the final model still answers
  by question keys,     per sleep (at its receiving level, before it), the share of the facts' answer positions
  by restatement keys   within key_threshold of a key from the teacher's closed-book questions, and of one from
                        its passage restatements (the sleep's pairs rebuilt as it drew them; mean over sleeps)

  own question tokens   after the stream, each sleep's expert on its own experience's dev questions: the share of
  own answer positions  the questions' tokens (the whole question, read as text) and of their answer positions where
                        its gate opens (mean over sleeps)

kept = 1 − open × (1 − kept when open) (when nothing is lost where no gate opens): whether what is left lies in
opening less (the threshold, the keys, how many experts) or in doing less harm where a gate opens (protection).

    .venv/bin/python docs/scripts/key_gate_reach.py --rows "sleep +own questions as cues, keyed gate" [--seeds 0 1 2 3 4] [--block NAME]
"""

from __future__ import annotations

from pathlib import Path

import torch

from somna.learners.text.encoding import IGNORE, encode_pairs, greedy_answers
from somna.learners.text.experts import cms_blocks
from somna.learners.text.rewards import exact_match
from somna.learners.text.seeding import closed_book
from somna.learners.text.sleep import receiver_level

from key_separation import level_inputs, nearest_key  # this script's folder is on sys.path when it runs
from protection_coverage import world_facts
from readback import cached_in_run, readback_args, rebuilt, write_row_table
from router_reach import WORLD_FACTS, experts_by_sleep
from seeding_coverage import sleep_pairs

CACHE = "key_gate_reach.json"
OWN_CACHE = "key_gate_own_questions.json"
KINDS = ("by question keys", "by restatement keys")
OWN = ("own question tokens", "own answer positions")
COLUMNS = ["known", "open, per expert", "open, any expert", "kept when open", "kept when shut", "kept", *KINDS, *OWN]


def answer_gates(learner, prompts: list[str], answers: list[str]) -> tuple[list[float], torch.Tensor]:
    """Per keyed expert, the share of the pairs' answer positions where its gate opens; and (pairs,) bool, whether
    some keyed expert opens at one of the pair's answer positions."""
    per_pair = (encode_pairs(learner.tokenizer, prompts, answers, learner.config.max_length)["labels"][:, 1:] != IGNORE).sum(dim=1).tolist()
    shares, opened = [], torch.zeros(len(prompts), dtype=torch.bool)
    for block in cms_blocks(learner.model):
        keyed = [e for e in block.unlocked() if block.keyed(e)]
        if keyed:
            queries = level_inputs(learner, block, prompts, answers, as_queries=True).to(block.expert_keys)  # the pairs' positions in order
            for e in keyed:
                gate = block.key_gate(e, queries)[:, 0].bool().cpu()
                shares.append(float(gate.float().mean()))
                opened |= torch.stack([pair.any() for pair in gate.split(per_pair)])
    return shares, opened


def share(flags: torch.Tensor, among: torch.Tensor) -> float:
    """The share of `flags` among the facts where `among` holds (nan when none does)."""
    return float(flags[among].float().mean()) if among.any() else float("nan")


def opened_by_kind(run, learner, experiences: list, prompts: list[str], answers: list[str]) -> dict[str, float]:
    """Per sleep, the share of the (prompt, answer) pairs' answer positions within the threshold of a key of each kind
    (see the module docstring), mean over sleeps. The learner must hold the base; it walks through the run's checkpoints, each sleep read before it."""
    blocks, threshold = cms_blocks(learner.model), learner.config.model.key_threshold
    opened: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for sleep, checkpoint in enumerate(run.checkpoints()):
        block = blocks[receiver_level(learner.config.receiver, len(blocks), sleep)]
        taught = sleep_pairs(learner, experiences[checkpoint.index])
        questions, restatements = taught.partition({p for p in taught.prompts if closed_book(p)})
        old = level_inputs(learner, block, prompts, answers, as_queries=True)
        for kind, pairs in zip(KINDS, (questions, restatements)):
            keys = level_inputs(learner, block, pairs.prompts, pairs.completions, as_queries=True)
            opened[kind].append(float((nearest_key(keys, old) >= threshold).float().mean()))
        learner.load_state_dict(checkpoint.load())
    return {kind: sum(values) / len(values) for kind, values in opened.items()}


@cached_in_run(CACHE)
def run_reach(run_dir: Path) -> dict[str, float]:
    run, learner, experiences = rebuilt(run_dir)
    facts = world_facts(learner.config.model.base)[:WORLD_FACTS]
    prompts, answers = [f.prompt for f in facts], [f.answer for f in facts]
    max_new = learner.config.eval_max_new_tokens
    said = greedy_answers(learner.model, learner.tokenizer, prompts, max_new)  # the base: no expert unlocked yet
    known = torch.tensor([exact_match(p, a) for p, a in zip(said, answers)], dtype=torch.bool)
    by_kind = opened_by_kind(run, learner, experiences, prompts, said)
    learner.load_state_dict(run.checkpoints()[-1].load())  # the model after the whole stream
    kept = torch.tensor([exact_match(p, a) for p, a in zip(greedy_answers(learner.model, learner.tokenizer, prompts, max_new), answers)], dtype=torch.bool)
    per_expert, opened = answer_gates(learner, [p for p, k in zip(prompts, known) if k], [a for a, k in zip(said, known) if k])
    opened = torch.zeros_like(known).masked_scatter(known, opened)
    return {
        "known": float(known.float().mean()),
        "open, per expert": sum(per_expert) / len(per_expert),
        "open, any expert": share(opened, known),
        "kept when open": share(kept, known & opened),
        "kept when shut": share(kept, known & ~opened),
        "kept": share(kept, known),
        **by_kind,
    }


@cached_in_run(OWN_CACHE)
def run_own_questions(run_dir: Path) -> dict[str, float]:
    """The OWN columns (see the module docstring)."""
    run, learner, experiences = rebuilt(run_dir)
    checkpoints = run.checkpoints()
    learner.load_state_dict(checkpoints[-1].load())
    opened: dict[str, list[float]] = {column: [] for column in OWN}
    for (block, expert), checkpoint in zip(experts_by_sleep(learner, len(checkpoints)), checkpoints):
        dev = experiences[checkpoint.index].dev
        questions = [row["prompt"] for row in dev]
        read_as_text = level_inputs(learner, block, [""] * len(questions), questions, as_queries=True)
        answered = level_inputs(learner, block, questions, [row["answer"] for row in dev], as_queries=True)
        for column, queries in zip(OWN, (read_as_text, answered)):
            opened[column].append(float(block.key_gate(expert, queries.to(block.expert_keys)).mean()))
    return {column: sum(values) / len(values) for column, values in opened.items()}


def main() -> None:
    args = readback_args(__doc__, "key_gate_reach")
    write_row_table(
        args, "key_gate_reach.py",
        f"The model after the whole stream, on {WORLD_FACTS} world facts, at the positions that predict the base's own "
        "greedy answer; kept: the final model still answers a fact the base answered.",
        "| row | world facts the base answers | answer positions a gate opens, per expert | facts where some gate opens "
        "| kept where a gate opens | kept where none opens | kept | per sleep, answer positions near a key of its questions "
        "| near a key of its restatements | its own dev questions, tokens a gate opens | their answer positions |",
        COLUMNS,
        lambda run_dir: run_reach(run_dir) | run_own_questions(run_dir),
    )


if __name__ == "__main__":
    main()
