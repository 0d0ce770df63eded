"""The generated world: seeded, typed facts told and asked in paraphrases, and a name split pretraining never crosses."""

from __future__ import annotations

import re

import numpy as np

from somna.curricula.world import ATTRIBUTES, QUESTION_SPLITS, UNSEEN_MODULUS, World, WorldConfig, is_unseen

NAME = re.compile(r"\b[A-Z][a-z]+\b")


def test_the_world_is_fixed_by_its_seed_and_relations_point_inside_it():
    world, again, other = World(WorldConfig()), World(WorldConfig()), World(WorldConfig(seed=1))
    assert world.entities == again.entities and world.entities != other.entities
    people = {entity.name for entity in world.entities}
    assert len(people) == 200 and all(set(entity.facts) == set(ATTRIBUTES) for entity in world.entities)
    assert all(e.facts["friend"] in people - {e.name} and e.facts["home"] in world.towns for e in world.entities)
    assert world.pretraining_documents(np.random.default_rng(3), 20) == again.pretraining_documents(np.random.default_rng(3), 20)


def test_pretraining_never_names_an_unseen_entity_and_skill_probes_only_do():
    world = World(WorldConfig())
    documents = world.pretraining_documents(np.random.default_rng(0), 2000)
    names = {name for document in documents for name in NAME.findall(document)}
    assert len(names) > 1000 and not any(is_unseen(name) for name in names)
    probes = world.skill_probes(np.random.default_rng(1), 50)
    unseen = {name for row in probes["in_context_qa"] for name in NAME.findall(row["prompt"])} - {"Q", "A"}
    assert unseen and all(is_unseen(name) for name in unseen)
    assert abs(sum(map(is_unseen, (f"Name{i}" for i in range(4000)))) / 4000 - 1 / UNSEEN_MODULUS) < 0.03


def test_skill_probes_are_answered_by_their_passage_or_by_the_world():
    world = World(WorldConfig(num_entities=30))
    probes = world.skill_probes(np.random.default_rng(2), 40)
    for reading, closed in zip(probes["in_context_qa"], probes["closed_book_qa_unseen"]):
        assert reading["prompt"] == f"{reading['context']} {closed['prompt']}" and reading["answer"] in reading["context"]
        assert closed["prompt"].startswith("Q: ") and closed["prompt"].endswith(" A:") and closed["answer"] == reading["answer"]
    facts = {(e.name, value) for e in world.entities for value in e.facts.values()}
    for row in probes["closed_book_qa_world"]:
        assert any((name, row["answer"]) in facts for name in NAME.findall(row["prompt"]))


def test_test_and_dev_question_paraphrases_are_disjoint():
    assert not set(QUESTION_SPLITS["test"]) & set(QUESTION_SPLITS["dev"])
    for spec in ATTRIBUTES.values():
        asked = [spec.questions[i] for i in QUESTION_SPLITS["all"]]
        assert len(set(asked)) == len(asked)


def test_a_chain_holds_its_items_as_documents_and_asks_each_recall_passage_after_them():
    world = World(WorldConfig(num_entities=30, reading=1, passages=1, closed_book=1, recall=1, chain=6))
    chains = world.pretraining_chains(np.random.default_rng(4), 50)
    assert len(chains) == 50
    recalled = 0
    for chain in chains:
        questions = [i for i, (prompt, _) in enumerate(chain) if prompt.startswith("Q: ") and i >= 6]
        assert len(chain) == 6 + len(questions)  # the items, then one question per recall passage
        told = {name for prompt, text in chain[:6] if not prompt for name in NAME.findall(text)}
        for i in questions:
            prompt, answer = chain[i]
            person = NAME.findall(prompt.removeprefix("Q: "))[0]
            assert person in told and any(person in text and answer in text for p, text in chain[:6] if not p)
            recalled += 1
        assert not any(is_unseen(name) for prompt, text in chain for name in NAME.findall(f"{prompt} {text}"))
    assert recalled > 20  # a quarter of 300 items are recall items


def test_chains_are_one_document_by_default_and_documents_counts_texts():
    world = World(WorldConfig(num_entities=30))
    assert all(len(chain) == 1 for chain in world.pretraining_chains(np.random.default_rng(0), 40))
    chained = World(WorldConfig(num_entities=30, recall=0.5, chain=8))
    assert len(chained.pretraining_documents(np.random.default_rng(0), 37)) == 37
