"""How many of the dreams a sleep fitted are correct self-edits, read against the world that wrote the passages.

    .venv/bin/python docs/scripts/self_edit_check.py runs/dreaming-every-passage --variants docs/dreaming_bounds_variants.yaml --block self_edit_check

`evals.dreams` calls a dream *grounded* when its answer is words of its passage, which any name of
the passage passes. This script knows the world's sentence and question templates
(curricula/world.py), so it reads each passage's facts (who, which attribute, what value) and each
consolidated dream "Q: {question} A: {answer}": *well formed* when the question is one of the
world's question paraphrases about a person of its passage, *correct* when it is well formed and
its answer is that person's value. Mean ± CI over the seeds of: the dreams fitted per sleep, the
shares of them well formed and correct, and the share of the facts (of the passages the sleep
dreamed about: every passage with `consolidate=every-passage`) that at least one correct dream
states, per sleep. Rows whose runs fitted no dreams are left
out (the dev-answers rows fit one correct line per fact by construction). The table replaces the text
between the `lm_table:BLOCK` markers of --out.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import yaml

from somna.curricula.world import ATTRIBUTES
from somna.evals.dreams import ExperienceDreams, read_dreams
from somna.learners.text.dreaming import sentences

from dreaming_table import finished_runs, sweep_folder_cli  # this script's folder is on sys.path when it runs
from lm_table import fmt

NAME, VALUE = r"(?P<e>[A-Z][a-z]+)", r"(?P<v>[A-Za-z0-9]+)"
Fact = tuple[str, str]  # (person, attribute)


def template_pattern(template: str) -> re.Pattern[str]:
    """A world template ("{e} lives in {v}.") as a regex that captures the person and the value."""
    return re.compile(re.escape(template).replace(r"\{e\}", NAME).replace(r"\{v\}", VALUE))


STATEMENTS = [(attribute, template_pattern(t)) for attribute, spec in ATTRIBUTES.items() for t in spec.statements]
QUESTIONS = [(attribute, template_pattern(t)) for attribute, spec in ATTRIBUTES.items() for t in spec.questions]


def passage_facts(passage: str) -> dict[Fact, str]:
    """Every (person, attribute) -> value its sentences state."""
    facts = {}
    for sentence in sentences(passage):
        for attribute, pattern in STATEMENTS:
            match = pattern.fullmatch(sentence)
            if match:
                facts[(match["e"], attribute)] = match["v"]
                break
    return facts


def asked_fact(dream: str) -> tuple[Fact, str] | None:
    """(the fact a "Q: ... A: ..." dream asks, its answer) when the question is one of the world's paraphrases."""
    match = re.fullmatch(r"Q: (?P<q>.+?) A: (?P<a>.+)", dream.strip())
    if not match:
        return None
    for attribute, pattern in QUESTIONS:
        question = pattern.fullmatch(match["q"])
        if question:
            return (question["e"], attribute), match["a"].strip().rstrip(".")
    return None


def sleep_counts(sleep: ExperienceDreams) -> tuple[int, int, int, int, int]:
    """(fitted, well formed, correct, facts a correct dream states, facts in the passages) of one sleep."""
    facts: dict[Fact, str] = {}
    for passage in {d.passage for d in sleep.dreams}:
        facts |= passage_facts(passage)
    fitted = sleep.consolidated()
    asked = [parsed for parsed in map(asked_fact, (d.text for d in fitted)) if parsed and parsed[0] in facts]
    well_formed = len(asked)
    correct = [fact for fact, answer in asked if answer == facts[fact]]
    return len(fitted), well_formed, len(correct), len(set(correct)), len(facts)


def run_row(path: Path) -> tuple[float, float, float, float] | None:
    """A run's dreams fitted per sleep, the shares of them well formed and correct (over its sleeps together),
    and the share of facts a correct dream states per sleep; None when it fitted no dream."""
    sleeps = [sleep_counts(sleep) for sleep in read_dreams(path).experiences]
    if not sum(counts[0] for counts in sleeps):
        return None
    fitted, formed, correct, stated, facts = (np.array(column, dtype=float) for column in zip(*sleeps))
    return float(fitted.mean()), float(formed.sum() / fitted.sum()), float(correct.sum() / fitted.sum()), float((stated / np.maximum(facts, 1)).mean())


def table(sweep_dir: Path, variants_file: Path, seeds: list[int] | None = None) -> str:
    order = list(yaml.safe_load(variants_file.read_text()))
    runs = finished_runs(sweep_dir, order, seeds)
    rows = {label: [row for row in map(run_row, (run.path for run in runs[label])) if row is not None] for label in order}
    lines = [
        "What the fitted dreams say, against the world that wrote the passages (per sleep, mean ± 95% CI over the seeds):",
        "",
        "| row | dreams fitted | well formed | correct | facts a correct dream states |",
        "|---|---:|---:|---:|---:|",
    ]
    for label in order:
        if rows.get(label):
            lines.append(f"| {label} | {' | '.join(fmt(list(column)) for column in zip(*rows[label]))} |")
    return "\n".join(lines)


def main() -> None:
    sweep_folder_cli(table, __doc__.splitlines()[0], "self_edit_check")


if __name__ == "__main__":
    main()
