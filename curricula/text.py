"""Text streams for language-model learners, generated from a seed (or mapped from a Hugging Face dataset).

Every split of every text curriculum is a `datasets.Dataset` with four string columns:
  text     the document a language model trains on (a passage, a QA line, a translation pair)
  prompt   what the model is asked at test time ("" on rows that are only documents)
  answer   the expected completion of `prompt` ("" on rows that are only documents)
  context  the passage the answer comes from (only the `in-context` ceiling reads it at test time)
Test rows are probes (prompt/answer); `text` = prompt + " " + answer there, for perplexity.
`experience.metadata["score"]` names the task score: "exact_match" or "chrf".

* fact-stream: fictional entities with several facts each, told in paraphrased passages;
  probes are no-context questions (SQuAD-shaped knowledge incorporation at toy scale).
  A fraction `probe_overlap` of facts also appears as QA lines in train (teaching the QA format);
  the rest must be answered from the passages alone.
* new-language: one generated language per experience (a lexicon over a shared English
  vocabulary plus a word order); parallel sentences, held-out test sentences scored by chrF.
* intents: class-incremental text classification over generated intent templates.

`hf_dataset` (a hub name, or a local directory saved with `save_to_disk`) replaces the generator:
fact-stream reads SQuAD columns (context, question, answers), new-language reads a `translation`
column per pair in `hf_pairs`, intents reads `text` + ClassLabel `label` (e.g. banking77).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import datasets
import numpy as np

from somna.curricula.base import Curriculum, CurriculumConfig, Experience, StreamInfo
from somna.platform.registry import register_curriculum

COLUMNS = ("text", "prompt", "answer", "context")
_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def make_word(rng: np.random.Generator, syllables: int) -> str:
    """A pronounceable made-up word (consonant-vowel syllables)."""
    return "".join(rng.choice(list(_CONSONANTS)) + rng.choice(list(_VOWELS)) for _ in range(syllables))


def unique_words(rng: np.random.Generator, count: int, syllables: int, taken: set[str]) -> list[str]:
    words: list[str] = []
    while len(words) < count:
        word = make_word(rng, syllables)
        if word not in taken:
            taken.add(word)
            words.append(word)
    return words


def text_dataset(rows: list[dict[str, str]]) -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {column: [row.get(column, "") for row in rows] for column in COLUMNS},
        features=datasets.Features({column: datasets.Value("string") for column in COLUMNS}),
    )


def probe_row(prompt: str, answer: str, context: str = "") -> dict[str, str]:
    return {"text": f"{prompt} {answer}", "prompt": prompt, "answer": answer, "context": context}


def load_hf(name: str, split: str, subset: str | None = None) -> datasets.Dataset:
    """A hub dataset by name, or a local `save_to_disk` directory (a `subset` is a subfolder there)."""
    if os.path.isdir(name):
        loaded = datasets.load_from_disk(os.path.join(name, subset) if subset else name)
        return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    return datasets.load_dataset(name, subset, split=split)


@dataclass
class TextCurriculumConfig(CurriculumConfig):
    hf_dataset: str | None = None  # hub name or local save_to_disk dir; None = generated stream
    hf_split: str = "train"


class TextCurriculum(Curriculum):
    """Shared shape of the text streams: modality "text", StreamInfo with no input shape."""

    modality = "text"
    score = "exact_match"

    def experience(self, index: int, train: list[dict], test: list[dict], classes: tuple[int, ...] = ()) -> Experience:
        return Experience(
            index=index,
            train=text_dataset(train),
            test=text_dataset(test),
            classes=classes,
            task_id=index if self.scenario == "task" else None,
            metadata={"score": self.score},
        )

    @property
    def num_classes(self) -> int:
        return 0

    @property
    def info(self) -> StreamInfo:
        return StreamInfo(
            name=self.config.name,
            scenario=self.scenario,
            num_experiences=len(self.experiences),
            num_classes=self.num_classes,
            input_shape=(),
            modality="text",
            classes_per_experience=tuple(e.classes for e in self.experiences),
        )


# -- fact-stream ------------------------------------------------------------------------------
# attribute -> (question, statement paraphrases, value pool; None = made-up names)
FACT_TEMPLATES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...] | None]] = {
    "color": ("what color is {e}?", ("{e} is {v}.", "the color of {e} is {v}."), ("red", "blue", "green", "gold", "gray", "pink")),
    "home": ("where does {e} live?", ("{e} lives in {v}.", "the home of {e} is {v}."), None),
    "food": ("what does {e} eat?", ("{e} eats {v}.", "the food of {e} is {v}."), ("rice", "fish", "bread", "plums", "nuts", "soup")),
    "friend": ("who is the friend of {e}?", ("{e} is a friend of {v}.", "the friend of {e} is {v}."), None),
    "age": ("how old is {e}?", ("{e} is {v} years old.", "the age of {e} is {v}."), tuple(str(n) for n in range(2, 20))),
}


@dataclass
class FactStreamConfig(TextCurriculumConfig):
    name: str = "fact-stream"
    num_experiences: int = 4
    entities_per_experience: int = 4
    facts_per_entity: int = 3
    paraphrases: int = 2
    probe_overlap: float = 0.5  # fraction of facts whose QA line is also in train
    hf_max_passages: int = 40  # hub path: passages used in all


@register_curriculum("fact-stream")
class FactStream(TextCurriculum):
    """Passages about fictional entities, probed by no-context questions (knowledge incorporation)."""

    Config = FactStreamConfig
    scenarios = ("domain", "task")
    default_scenario = "domain"

    def build(self) -> list[Experience]:
        config = self.config
        if not 1 <= config.facts_per_entity <= len(FACT_TEMPLATES):
            raise ValueError(f"curriculum.facts_per_entity must be in 1..{len(FACT_TEMPLATES)}, got {config.facts_per_entity}")
        if not 0.0 <= config.probe_overlap <= 1.0:
            raise ValueError(f"curriculum.probe_overlap must be in [0, 1], got {config.probe_overlap}")
        if config.hf_dataset:
            return self._from_squad()
        rng = np.random.default_rng(self.seed)
        taken: set[str] = set()
        experiences = []
        for index in range(config.num_experiences):
            train, test = [], []
            for entity in unique_words(rng, config.entities_per_experience, 2, taken):
                attributes = rng.choice(list(FACT_TEMPLATES), size=config.facts_per_entity, replace=False)
                facts = []
                for attribute in attributes:
                    question, statements, pool = FACT_TEMPLATES[attribute]
                    value = str(rng.choice(pool)) if pool else make_word(rng, 2)
                    facts.append((question.format(e=entity), [s.format(e=entity, v=value) for s in statements], value))
                passages = [" ".join(f[1][p % len(f[1])] for f in facts) for p in range(config.paraphrases)]
                train += [{"text": passage, "context": passage} for passage in passages]
                for question, _, value in facts:
                    probe = probe_row(f"Q: {question} A:", value, passages[0])
                    test.append(probe)
                    if rng.random() < config.probe_overlap:
                        train.append(probe)
            order = rng.permutation(len(train))
            experiences.append(self.experience(index, [train[i] for i in order], test))
        return experiences

    def _from_squad(self) -> list[Experience]:
        """SQuAD-shaped rows (context, question, answers.text) grouped by passage into experiences."""
        rows = load_hf(self.config.hf_dataset, self.config.hf_split)
        by_context: dict[str, list[dict]] = {}
        for row in rows:
            if row["context"] not in by_context and len(by_context) == self.config.hf_max_passages:
                continue
            answer = row["answers"]["text"][0] if row["answers"]["text"] else ""
            by_context.setdefault(row["context"], []).append(probe_row(f"Q: {row['question']} A:", answer, row["context"]))
        contexts = list(by_context)
        if len(contexts) < self.config.num_experiences:
            raise ValueError(f"curriculum.hf_dataset has {len(contexts)} passages, fewer than num_experiences={self.config.num_experiences}")
        rng = np.random.default_rng(self.seed)
        experiences = []
        for index, chunk in enumerate(np.array_split(np.arange(len(contexts)), self.config.num_experiences)):
            train, test = [], []
            for c in chunk:
                train.append({"text": contexts[c], "context": contexts[c]})
                for probe in by_context[contexts[c]]:
                    test.append(probe)
                    if rng.random() < self.config.probe_overlap:
                        train.append(probe)
            experiences.append(self.experience(index, train, test))
        return experiences


# -- new-language -----------------------------------------------------------------------------
SUBJECTS = ("the cat", "the dog", "a bird", "the man", "the woman", "a child")
VERBS = ("sees", "likes", "eats", "finds")
OBJECTS = ("the fish", "an apple", "the ball", "the house", "a tree")
WORD_ORDERS = ("svo", "sov", "vso", "osv", "ovs", "vos")


@dataclass
class NewLanguageConfig(TextCurriculumConfig):
    name: str = "new-language"
    num_experiences: int = 3
    train_sentences: int = 60
    test_sentences: int = 16
    hf_pairs: list[str] = field(default_factory=list)  # hub path: one translation config per experience, e.g. ["en-fr"]
    hf_max_sentences: int = 200


@register_curriculum("new-language")
class NewLanguage(TextCurriculum):
    """A generated toy language per experience; translate held-out English sentences (chrF)."""

    Config = NewLanguageConfig
    scenarios = ("domain", "task")
    default_scenario = "domain"
    score = "chrf"

    def build(self) -> list[Experience]:
        config = self.config
        if config.hf_dataset:
            return self._from_translation()
        sentences = [(s, v, o) for s in SUBJECTS for v in VERBS for o in OBJECTS]
        if config.train_sentences + config.test_sentences > len(sentences):
            raise ValueError(f"curriculum.train_sentences + test_sentences must be <= {len(sentences)}")
        rng = np.random.default_rng(self.seed)
        content = sorted({w.split()[-1] for w in SUBJECTS + OBJECTS} | set(VERBS))
        taken: set[str] = set()
        experiences = []
        for index in range(config.num_experiences):
            lexicon = dict(zip(content, unique_words(rng, len(content), 2, taken)))
            order = WORD_ORDERS[int(rng.integers(len(WORD_ORDERS)))]
            tag = f"l{index}"
            picks = rng.permutation(len(sentences))
            rows = []
            for i in picks[: config.train_sentences + config.test_sentences]:
                words = dict(zip("svo", sentences[i]))
                foreign = " ".join(lexicon[words[role].split()[-1]] for role in order)
                rows.append(probe_row(f"en: {' '.join(sentences[i])} | {tag}:", foreign))
            experiences.append(self.experience(index, rows[: config.train_sentences], rows[config.train_sentences :]))
        return experiences

    def _from_translation(self) -> list[Experience]:
        """Rows with a `translation` dict {source: ..., target: ...}; one pair (subset) per experience."""
        if len(self.config.hf_pairs) != self.config.num_experiences:
            raise ValueError(f"curriculum.hf_pairs needs one pair per experience ({self.config.num_experiences}), got {list(self.config.hf_pairs)}")
        experiences = []
        for index, pair in enumerate(self.config.hf_pairs):
            source, target = pair.split("-")
            data = load_hf(self.config.hf_dataset, self.config.hf_split, pair)
            rows = [probe_row(f"{source}: {r['translation'][source]} | {target}:", r["translation"][target]) for r in data.select(range(min(len(data), self.config.hf_max_sentences)))]
            cut = max(1, int(0.8 * len(rows)))
            experiences.append(self.experience(index, rows[:cut], rows[cut:]))
        return experiences


# -- intents ----------------------------------------------------------------------------------
INTENTS: dict[str, tuple[str, ...]] = {
    "weather": ("what is the weather in {place}", "will it rain in {place} {day}", "is it cold in {place}"),
    "alarm": ("set an alarm for {time}", "wake me up at {time}", "alarm at {time} {day}"),
    "music": ("play some {genre}", "put on {genre} music", "i want to hear {genre}"),
    "timer": ("start a timer for {minutes} minutes", "count down {minutes} minutes", "timer {minutes} min"),
    "food": ("order {dish} for {day}", "i am hungry for {dish}", "get me {dish}"),
    "travel": ("book a train to {place}", "find a flight to {place} {day}", "how do i get to {place}"),
}
SLOTS: dict[str, tuple[str, ...]] = {
    "place": ("paris", "rome", "oslo", "lima", "cairo", "tokyo"),
    "day": ("today", "tomorrow", "on monday", "tonight"),
    "time": ("6 am", "7 am", "noon", "9 pm"),
    "genre": ("jazz", "rock", "folk", "techno"),
    "minutes": ("5", "10", "15", "20"),
    "dish": ("pizza", "sushi", "tacos", "noodles"),
}


@dataclass
class IntentsConfig(TextCurriculumConfig):
    name: str = "intents"
    num_experiences: int = 3
    intents_per_experience: int = 2
    train_per_intent: int = 20
    test_per_intent: int = 8


@register_curriculum("intents")
class Intents(TextCurriculum):
    """Class-incremental intent classification: the model completes "utterance =>" with the intent name."""

    Config = IntentsConfig
    scenarios = ("class", "task")
    default_scenario = "class"

    def build(self) -> list[Experience]:
        config = self.config
        names, utterances = self._labelled_utterances()
        needed = config.num_experiences * config.intents_per_experience
        if needed > len(names):
            raise ValueError(f"curriculum.num_experiences * intents_per_experience must be <= {len(names)}, got {needed}")
        self._names = names
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(names))[:needed].reshape(config.num_experiences, -1)
        experiences = []
        for index, labels in enumerate(order):
            train, test = [], []
            for label in labels:
                pool = utterances[label]
                picks = rng.choice(len(pool), size=config.train_per_intent + config.test_per_intent, replace=len(pool) < config.train_per_intent + config.test_per_intent)
                rows = [probe_row(f"{pool[i]} =>", names[label]) for i in picks]
                train += rows[: config.train_per_intent]
                test += rows[config.train_per_intent :]
            shuffle = rng.permutation(len(train))
            experiences.append(self.experience(index, [train[i] for i in shuffle], test, tuple(int(label) for label in labels)))
        return experiences

    def _labelled_utterances(self) -> tuple[list[str], list[list[str]]]:
        """(intent names, utterances per intent), generated or from a hub dataset with `text` + ClassLabel `label`."""
        if self.config.hf_dataset:
            data = load_hf(self.config.hf_dataset, self.config.hf_split)
            names = [name.replace("_", " ") for name in data.features["label"].names]
            utterances: list[list[str]] = [[] for _ in names]
            for row in data:
                utterances[row["label"]].append(row["text"].lower())
            kept = [i for i, u in enumerate(utterances) if u]
            return [names[i] for i in kept], [utterances[i] for i in kept]
        rng = np.random.default_rng(self.seed + 1)
        names = list(INTENTS)
        utterances = []
        for name in names:
            pool = set()
            for template in INTENTS[name]:
                for _ in range(12):
                    pool.add(template.format(**{slot: rng.choice(values) for slot, values in SLOTS.items()}))
            utterances.append(sorted(pool))
        return names, utterances

    @property
    def num_classes(self) -> int:
        return len(self._names)
