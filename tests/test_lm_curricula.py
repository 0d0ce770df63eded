"""Text curricula: documented columns, seeded determinism, no test question in train or dev, and the Hugging Face path on local stand-ins."""

from __future__ import annotations

import re

import datasets
import pytest
import yaml
from omegaconf import OmegaConf

import somna.curricula  # noqa: F401  (registers the text curricula)
from somna.curricula.text import COLUMNS
from somna.curricula.world import is_unseen
from somna.platform.config import PRESETS_DIR, load_config
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
        for split in (experience.train, experience.test, experience.dev):
            assert tuple(split.column_names) == COLUMNS
        for probes in (experience.test, experience.dev):
            assert all(row["prompt"] and row["answer"] and row["text"] == f"{row['prompt']} {row['answer']}" for row in probes)
    assert [e.train["text"] for e in first] == [e.train["text"] for e in again]
    assert [e.train["text"] for e in first] != [e.train["text"] for e in other]


TEXT_PRESETS = sorted(
    path.stem for path in PRESETS_DIR.glob("*.yaml") if CURRICULA.get(yaml.safe_load(path.read_text())["curriculum"]["name"]).modality == "text"
)


@pytest.mark.parametrize("preset", TEXT_PRESETS)
def test_no_test_question_occurs_in_train_or_dev_of_any_shipped_text_preset(preset):
    """The bench is leak-free: a test prompt is in no train row and no dev row (as a substring, whatever the column)."""
    cfg = load_config(preset)
    curriculum = build(cfg.curriculum.name, **{k: v for k, v in OmegaConf.to_container(cfg.curriculum).items() if k != "name"})
    assert len(curriculum) == cfg.curriculum.num_experiences
    for experience in curriculum:
        seen = " \n ".join(row[column] for split in (experience.train, experience.dev) for row in split for column in ("text", "prompt", "answer"))
        leaked = [row["prompt"] for row in experience.test if row["prompt"] in seen]
        assert not leaked, f"{preset}: {len(leaked)} test prompts occur in train or dev, e.g. {leaked[0]!r}"
        if not preset.endswith("-micro"):
            assert len(experience.test) >= 100 and len(experience.dev) > 0


def test_fact_stream_tells_unseen_people_in_passages_and_asks_in_other_paraphrases():
    stream = build("fact-stream")
    for experience in stream:
        assert not any(experience.train["prompt"])  # train rows are passages only
        passages = set(experience.train["text"])
        for row in experience.test:
            assert row["context"] in passages and row["answer"] in row["context"]
            assert all(is_unseen(name) for name in re.findall(r"\b[A-Z][a-z]+\b", row["prompt"]) if name not in ("Q", "A"))
        questions = {row["prompt"] for row in experience.test}
        assert not questions & {row["prompt"] for row in experience.dev}
    assert not set(stream[0].test["prompt"]) & set(stream[1].test["prompt"])  # new people every experience
    assert len(stream[0].test) == 10 * 5 * 2 and len(stream[0].dev) == 10 * 5 and len(stream[0].train) == 10 * 2


def test_new_language_scores_by_chrf_and_holds_out_test_and_dev_sentences():
    stream = build("new-language")
    assert stream[0].metadata["score"] == "chrf"
    for experience in stream:
        splits = [set(split["prompt"]) for split in (experience.train, experience.test, experience.dev)]
        assert not splits[0] & splits[1] and not splits[0] & splits[2] and not splits[1] & splits[2]
    assert stream[0].train["answer"][0] != stream[1].train["answer"][0]


def test_intents_are_class_incremental():
    stream = build("intents")
    assert stream.info.num_classes == 6 and stream.info.scenario == "class"
    answers = [set(e.test["answer"]) for e in stream]
    assert all(len(a) == 2 for a in answers) and not answers[0] & answers[1]
    assert all(len(e.test) == 100 for e in stream)


def test_fact_stream_from_a_squad_shaped_local_dataset(tmp_path):
    rows = {
        "context": ["Mira grows plums.", "Mira grows plums.", "Oslo is cold.", "Rome is old."],
        "question": ["What does Mira grow?", "Who grows plums?", "What is Oslo?", "What is Rome?"],
        "answers": [{"text": ["plums"], "answer_start": [11]}, {"text": ["Mira"], "answer_start": [0]},
                    {"text": ["cold"], "answer_start": [8]}, {"text": ["old"], "answer_start": [8]}],
    }
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(tmp_path / "squad")
    stream = build("fact-stream", hf_dataset=str(tmp_path / "squad"), num_experiences=2, dev_questions=1)
    assert stream[0].train["text"] == ["Mira grows plums.", "Oslo is cold."]  # 3 passages in 2 experiences
    assert stream[0].dev["prompt"] == ["Q: What does Mira grow? A:"]  # a passage's first question is dev; each keeps a test one
    assert stream[0].test["prompt"] == ["Q: Who grows plums? A:", "Q: What is Oslo? A:"]
    assert stream[1].test["answer"] == ["old"] and stream[1].test["context"] == ["Rome is old."] and len(stream[1].dev) == 0


def test_intents_and_translation_from_local_datasets(tmp_path):
    labels = datasets.ClassLabel(names=["card_lost", "balance", "top_up", "refund"])
    data = datasets.Dataset.from_dict(
        {"text": [f"Utterance {i}" for i in range(40)], "label": [i % 4 for i in range(40)]},
        features=datasets.Features({"text": datasets.Value("string"), "label": labels}),
    )
    data.save_to_disk(tmp_path / "intents")
    stream = build("intents", hf_dataset=str(tmp_path / "intents"), num_experiences=2, train_per_intent=5, test_per_intent=2, dev_per_intent=1)
    assert set().union(*(set(e.test["answer"]) for e in stream)) == {"card lost", "balance", "top up", "refund"}

    for pair in ("en-fr", "en-de"):
        target = pair.split("-")[1]
        rows = [{"en": f"hello {i}", target: f"{target} {i}"} for i in range(10)]
        datasets.Dataset.from_dict({"translation": rows}).save_to_disk(tmp_path / "books" / pair)
    languages = build("new-language", hf_dataset=str(tmp_path / "books"), hf_pairs=["en-fr", "en-de"], num_experiences=2)
    assert languages[1].train[0] == {"text": "en: hello 0 | de: de 0", "prompt": "en: hello 0 | de:", "answer": "de 0", "context": ""}
    assert (len(languages[0].train), len(languages[0].test), len(languages[0].dev)) == (7, 2, 1)


def test_bad_options_are_value_errors():
    with pytest.raises(ValueError, match="facts_per_entity"):
        build("fact-stream", facts_per_entity=9)
    with pytest.raises(ValueError, match="intents_per_experience"):
        build("intents", num_experiences=4, intents_per_experience=2)
    with pytest.raises(ValueError, match="test_questions"):
        build("fact-stream", test_questions=4)
    with pytest.raises(ValueError, match="distinct utterances"):
        build("intents", test_per_intent=500)
