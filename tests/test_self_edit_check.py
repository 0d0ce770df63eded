"""docs/scripts/self_edit_check.py reads a dream against the world's own templates: a hand-built sleep's counts."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs" / "scripts"))

from self_edit_check import asked_fact, passage_facts, sleep_counts  # noqa: E402

from somna.evals.dreams import Dream, ExperienceDreams  # noqa: E402

PASSAGE = "Pokodi has a house in Zuzo. every night Pokodi has honey for dinner. Repila is the closest friend of Pokodi."


def dream(text: str, consolidated: bool = True) -> Dream:
    return Dream(0, 1, PASSAGE, text, 0.0, False, 0.0, 0.0, consolidated)


def test_passage_facts_reads_every_paraphrased_statement():
    assert passage_facts(PASSAGE) == {("Pokodi", "home"): "Zuzo", ("Pokodi", "food"): "honey", ("Pokodi", "friend"): "Repila"}


def test_asked_fact_needs_one_of_the_worlds_questions():
    assert asked_fact("Q: in which town does Pokodi live? A: Zuzo") == (("Pokodi", "home"), "Zuzo")
    assert asked_fact("Q: which town is Pokodi live? A: Zuzo") is None  # garbled paraphrase
    assert asked_fact("Pokodi lives in Zuzo.") is None  # not a QA line


def test_sleep_counts_separate_well_formed_correct_and_facts_stated():
    sleep = ExperienceDreams(0, [
        dream("Q: in which town does Pokodi live? A: Zuzo"),
        dream("Q: where does Pokodi live? A: Zuzo"),  # the same fact again: one fact stated
        dream("Q: what does Pokodi eat? A: rice"),  # well formed, wrong
        dream("Q: what is the job of Pokodi? A: baker"),  # a fact the passage does not state
        dream("Q: tell4 years old. A: honey"),  # garbled
        dream("Q: who is the friend of Pokodi? A: Repila", consolidated=False),  # not fitted
    ])
    assert sleep_counts(sleep) == (5, 3, 2, 1, 3)
