"""One world fact asked closed-book, and what a text holds of it: what the coverage read-back scripts share.

A fact is a person's attribute (`somna.curricula.world`); the stream's dev probes and the base's world facts
are both asked as "Q: {question paraphrase} A:", so one probe type and one matcher serve all of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from somna.curricula.world import ATTRIBUTES, Entity, question

from kernel_memory_probe import exact  # this script's folder is on sys.path when it runs


@dataclass(frozen=True)
class FactProbe:
    name: str
    attribute: str
    prompt: str
    answer: str


def world_probe(person: Entity, attribute: str) -> FactProbe:
    """`person`'s `attribute`, asked in question paraphrase 0."""
    prompt, answer = question(person, attribute, 0)
    return FactProbe(person.name, attribute, prompt, answer)


def read_probe(row: dict) -> FactProbe:
    """The person and attribute a probe row ({"prompt", "answer"}) asks about, read back from its question paraphrase."""
    for attribute, spec in ATTRIBUTES.items():
        for template in spec.questions:
            pattern = re.escape(f"Q: {template} A:").replace(re.escape("{e}"), r"(\w+)")
            if found := re.fullmatch(pattern, row["prompt"]):
                return FactProbe(found.group(1), attribute, row["prompt"], row["answer"])
    raise ValueError(f"no question paraphrase of the world reads {row['prompt']!r}")


def normalised(text: str) -> str:
    """Lowercased, whitespace collapsed: the form `asks` and `names` read."""
    return " ".join(text.lower().split())


def asks(text: str, fact: FactProbe) -> bool:
    """Whether `text` (normalised) holds a question asking `fact`'s attribute of its person, in any paraphrase."""
    return any(template.format(e=fact.name).lower() in text for template in ATTRIBUTES[fact.attribute].questions)


def names(text: str, fact: FactProbe) -> bool:
    """Whether `text` (normalised) names `fact`'s person."""
    return re.search(rf"\b{fact.name.lower()}\b", text) is not None


def answered(learner, facts: list[FactProbe]) -> list[float]:
    """Closed-book exact match (1 or 0) of the learner's current model on each fact."""
    if not facts:
        return []
    return exact(learner, [fact.prompt for fact in facts], [fact.answer for fact in facts])
