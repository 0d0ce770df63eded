"""Text curricula: documented columns, seeded determinism, and the Hugging Face path on local stand-ins."""

from __future__ import annotations

import datasets
import pytest
from omegaconf import OmegaConf

import somna.curricula  # noqa: F401  (registers the text curricula)
from somna.curricula.text import COLUMNS
from somna.platform.registry import CURRICULA


def build(name: str, seed: int = 0, **overrides):
    cls = CURRICULA.get(name)
    config = OmegaConf.merge(OmegaConf.structured(cls.Config()), overrides)
    return cls(config, scenario=cls.default_scenario, seed=seed)


@pytest.mark.parametrize("name", ["fact-stream", "new-language", "intents"])
def test_columns_modality_and_determinism(name):
    first, again, other = build(name), build(name), build(name, seed=1)
    assert type(first).modality == "text" and first.info.modality == "text"
    for experience in first:
        assert tuple(experience.train.column_names) == COLUMNS == tuple(experience.test.column_names)
        assert all(row["prompt"] and row["answer"] for row in experience.test)
        assert all(row["text"] == f"{row['prompt']} {row['answer']}" for row in experience.test)
    assert [e.train["text"] for e in first] == [e.train["text"] for e in again]
    assert [e.train["text"] for e in first] != [e.train["text"] for e in other]


def test_fact_stream_probes_are_answered_by_their_passage():
    stream = build("fact-stream", probe_overlap=0.0)
    for experience in stream:
        passages = set(experience.train["text"])
        assert all(row["context"] in passages and row["answer"] in row["context"] for row in experience.test)
        assert not set(experience.test["text"]) & passages  # no QA line leaks into train at overlap 0
    assert not set(stream[0].test["prompt"]) & set(stream[1].test["prompt"])  # new entities every experience


def test_new_language_scores_by_chrf_and_holds_out_test_sentences():
    stream = build("new-language")
    assert stream[0].metadata["score"] == "chrf"
    for experience in stream:
        assert not set(experience.train["prompt"]) & set(experience.test["prompt"])
    assert stream[0].train["answer"][0] != stream[1].train["answer"][0]


def test_intents_are_class_incremental():
    stream = build("intents")
    assert stream.info.num_classes == 6 and stream.info.scenario == "class"
    answers = [set(e.test["answer"]) for e in stream]
    assert all(len(a) == 2 for a in answers) and not answers[0] & answers[1]


def test_fact_stream_from_a_squad_shaped_local_dataset(tmp_path):
    rows = {
        "context": ["Mira grows plums.", "Mira grows plums.", "Oslo is cold.", "Rome is old."],
        "question": ["What does Mira grow?", "Who grows plums?", "What is Oslo?", "What is Rome?"],
        "answers": [{"text": ["plums"], "answer_start": [11]}, {"text": ["Mira"], "answer_start": [0]},
                    {"text": ["cold"], "answer_start": [8]}, {"text": ["old"], "answer_start": [8]}],
    }
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(tmp_path / "squad")
    stream = build("fact-stream", hf_dataset=str(tmp_path / "squad"), num_experiences=2, probe_overlap=0.0)
    assert stream[0].train["text"] == ["Mira grows plums.", "Oslo is cold."]  # 3 passages in 2 experiences
    assert stream[0].test["prompt"] == ["Q: What does Mira grow? A:", "Q: Who grows plums? A:", "Q: What is Oslo? A:"]
    assert stream[1].test["answer"] == ["old"] and stream[1].test["context"] == ["Rome is old."]


def test_intents_and_translation_from_local_datasets(tmp_path):
    labels = datasets.ClassLabel(names=["card_lost", "balance", "top_up", "refund"])
    data = datasets.Dataset.from_dict(
        {"text": [f"Utterance {i}" for i in range(40)], "label": [i % 4 for i in range(40)]},
        features=datasets.Features({"text": datasets.Value("string"), "label": labels}),
    )
    data.save_to_disk(tmp_path / "intents")
    stream = build("intents", hf_dataset=str(tmp_path / "intents"), num_experiences=2, train_per_intent=5, test_per_intent=2)
    assert set().union(*(set(e.test["answer"]) for e in stream)) == {"card lost", "balance", "top up", "refund"}

    for pair in ("en-fr", "en-de"):
        target = pair.split("-")[1]
        rows = [{"en": f"hello {i}", target: f"{target} {i}"} for i in range(10)]
        datasets.Dataset.from_dict({"translation": rows}).save_to_disk(tmp_path / "books" / pair)
    languages = build("new-language", hf_dataset=str(tmp_path / "books"), hf_pairs=["en-fr", "en-de"], num_experiences=2)
    assert languages[1].train[0] == {"text": "en: hello 0 | de: de 0", "prompt": "en: hello 0 | de:", "answer": "de 0", "context": ""}
    assert len(languages[0].test) == 2


def test_bad_options_are_value_errors():
    with pytest.raises(ValueError, match="facts_per_entity"):
        build("fact-stream", facts_per_entity=9)
    with pytest.raises(ValueError, match="intents_per_experience"):
        build("intents", num_experiences=4, intents_per_experience=2)
