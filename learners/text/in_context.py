"""In-context: each probe is asked with its passage in the prompt (the ceiling for knowledge that only has to be read).

Wake writes nothing into the weights: the experience's knowledge stays in the prompt. At test
time the probe's passage (its `context` column) comes first, "{passage} Q: ... A:", the reading
format the base was pretrained on, so the score is the base's reading comprehension of exactly
the facts the other learners must store: the accuracy knowledge would have if it were never
forgotten. (Fine-tuning on the passages as well would not raise this ceiling but lower it: on
the `world` base, fine-tuning on fact-stream keeps 0.19 of the base's reading skill.)
"""

from __future__ import annotations

from somna.learners.text.base_lm import BaseLM
from somna.learners.text.encoding import with_passage
from somna.platform.registry import register_learner


@register_learner("in-context")
class InContextLM(BaseLM):
    """The base, unchanged, evaluated with each probe's passage in the prompt (the ceiling)."""

    def probe_prompt(self, row: dict[str, str]) -> str:
        return with_passage(row["prompt"], row.get("context", ""))
