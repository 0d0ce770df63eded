"""Could a gate keyed on what a sleep was taught keep its expert off old inputs, where the linear router cannot?

`router_reach.py` found that a sleep's new expert opens almost as much on the base's world facts and on earlier
experiences as on its own: its router is one linear row on the receiving level's input, and it learned the form
of the text more than which people are new. A keyed gate (as GRACE's codebook of edit keys) would open only near
the inputs the expert was trained on. This reads back finished fact-stream runs of `docs/scripts/lm_table.py`
(context fast memory) and asks, for every sleep, how well each kind of gate could tell the positions where the
new expert should act from those where it should not, at the receiving level's input of the slow model as it
was before that sleep (the new expert sits in that level, so nothing it does changes that input):

  keys     the level's input at the answer positions of the pairs that sleep trained on (rebuilt as the sleep
           drew them: the same seed, the slow model as it was; see `seeding_coverage.sleep_pairs`)
  own      the experience's dev questions (closed-book), at their answer positions: where the expert should act;
           those the teacher happened to write word for word are left out (they would match their own key)
  earlier  the dev questions of the experiences before it; world: 200 world facts: where it should not
  key gate  a position's largest cosine similarity to a key
  router    the trained router row of the expert that sleep made (its checkpoint), on the same inputs

Reported per gate: the AUC of own against earlier and against world (the chance that an own position scores
above an old one; 0.5 = no separation), and the share of old positions still open at the threshold that keeps
nine tenths of own positions open (a point of the ROC curve, read on dev questions: a description, not a
setting). Dev questions and world facts only; never a test probe.

    .venv/bin/python docs/scripts/key_separation.py --rows "sleep +own questions as cues" [--seeds 0 1 2 3 4] [--block NAME]
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from somna.learners.text.experts import ExpertMLP, cms_blocks
from somna.learners.text.seeding import SeedingData, answer_inputs
from somna.learners.text.sleep import receiver_level

from protection_coverage import world_facts  # this script's folder is on sys.path when it runs
from readback import cached_in_run, readback_args, rebuilt, write_row_table
from router_reach import WORLD_FACTS, experts_by_sleep
from seeding_coverage import sleep_pairs

CACHE = "key_separation.json"
OLD = ("earlier", "world")
GATES = ("key", "router")
KEEP_OWN_OPEN = 0.9


def level_inputs(learner, block: ExpertMLP, prompts: list[str], answers: list[str], as_queries: bool = False) -> torch.Tensor:
    """(positions, dim): `block`'s input at the positions that predict the answers' tokens (what a keyed gate stores);
    with `as_queries`, its key queries there (what its keyed gates compare with their keys)."""
    return answer_inputs(learner.model, block, learner.tokenizer, SeedingData(prompts, prompts, answers), learner.config.max_length, as_queries=as_queries)


def nearest_key(keys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Each query's largest cosine similarity to a key."""
    keys, queries = F.normalize(keys, dim=-1), F.normalize(queries, dim=-1)
    return torch.cat([(chunk @ keys.T).max(dim=-1).values for chunk in queries.split(1024)])


def auc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """P(a positive scores above a negative), ties counted half."""
    above = (positive[:, None] > negative[None, :]).float() + 0.5 * (positive[:, None] == negative[None, :]).float()
    return float(above.mean())


def open_at(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """The share of negatives at or above the threshold that keeps KEEP_OWN_OPEN of the positives open."""
    threshold = torch.quantile(positive, 1 - KEEP_OWN_OPEN)
    return float((negative >= threshold).float().mean())


@cached_in_run(CACHE)
def run_separation(run_dir: Path) -> dict[str, float]:
    """Per gate and old group: AUC and the share open, averaged over the run's sleeps that have that group; and
    how many keys a sleep's pairs give (what a keyed gate would store per expert) and the share of own dev
    questions left out because the teacher wrote them verbatim."""
    run, learner, experiences = rebuilt(run_dir)
    world = world_facts(learner.config.model.base)[:WORLD_FACTS]
    scores: dict[str, list[float]] = {f"{kind}/{gate}/{group}": [] for kind in ("auc", "open") for gate in GATES for group in OLD}
    scores["keys"], scores["asked verbatim"] = [], []
    blocks = cms_blocks(learner.model)
    for sleep, checkpoint in enumerate(run.checkpoints()):
        experience = experiences[checkpoint.index]
        block = blocks[receiver_level(learner.config.receiver, len(blocks), sleep)]
        taught = sleep_pairs(learner, experience)  # the learner is still the slow model of this sleep
        keys = level_inputs(learner, block, taught.prompts, taught.completions)
        scores["keys"].append(len(keys))
        asked = set(taught.prompts)
        own = [r for r in experience.dev if r["prompt"] not in asked]  # a question the teacher wrote itself would match its own key
        scores["asked verbatim"].append(1 - len(own) / len(experience.dev))
        inputs = {"own": level_inputs(learner, block, [r["prompt"] for r in own], [r["answer"] for r in own])}
        earlier = [row for e in experiences[: checkpoint.index] for row in e.dev]
        if earlier:
            inputs["earlier"] = level_inputs(learner, block, [r["prompt"] for r in earlier], [r["answer"] for r in earlier])
        inputs["world"] = level_inputs(learner, block, [f.prompt for f in world], [f.answer for f in world])
        learner.load_state_dict(checkpoint.load())
        made, expert = experts_by_sleep(learner, sleep + 1)[sleep]
        assert made is block, "the receiving level is the one whose input was read"
        with torch.no_grad():
            gate_scores = {
                "key": {group: nearest_key(keys, x) for group, x in inputs.items()},
                "router": {group: made.experts[expert].gate(x.to(made.expert_mask.device))[:, 0].float().cpu() for group, x in inputs.items()},
            }
        for gate, by_group in gate_scores.items():
            for group in OLD:
                if group in by_group:
                    scores[f"auc/{gate}/{group}"].append(auc(by_group["own"], by_group[group]))
                    scores[f"open/{gate}/{group}"].append(open_at(by_group["own"], by_group[group]))
    return {name: sum(values) / len(values) for name, values in scores.items()}


def main() -> None:
    args = readback_args(__doc__, "key_separation")
    columns = [f"{kind}/{gate}/{group}" for kind in ("auc", "open") for gate in GATES for group in OLD] + ["keys", "asked verbatim"]
    write_row_table(
        args, "key_separation.py",
        "At each sleep's receiving level, before the sleep; averaged over the run's sleeps (earlier experiences: "
        "sleeps 2–4). Own: the experience's dev questions, but those the teacher wrote word for word; earlier: the earlier experiences' dev questions; world: "
        f"{WORLD_FACTS} world facts; answer positions. Key gate: largest cosine similarity to the inputs at the answer "
        "positions of the pairs the sleep trained on; router: the router row that sleep trained.",
        "| row | AUC own vs old: key gate, earlier | key gate, world | router, earlier | router, world "
        f"| old open when {KEEP_OWN_OPEN:.0%} of own is open: key gate, earlier | key gate, world | router, earlier | router, world "
        "| keys per sleep | own dev questions the teacher wrote verbatim (left out) |",
        columns,
        run_separation,
        digits=lambda column: 0 if column == "keys" else 3,
    )


if __name__ == "__main__":
    main()
