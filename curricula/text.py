"""Text streams for language-model learners, generated from a seed (or mapped from a Hugging Face dataset).

Every split of every text curriculum is a `datasets.Dataset` with four string columns:
  text     the document a language model trains on (a passage, a translation pair, a labelled utterance)
  prompt   what the model is asked ("" on rows that are only documents)
  answer   the expected completion of `prompt` ("" on rows that are only documents)
  context  the passage the answer comes from (only the `in-context` ceiling reads it at test time)
Test and dev rows are probes (prompt/answer); `text` = prompt + " " + answer there.
`experience.metadata["score"]` names the task score: "exact_match" or "chrf".

The benches are leak-free, and tests/test_lm_curricula.py checks it on every shipped preset:
no test prompt occurs in any train or dev row. `experience.dev` holds other probes of the
same experience, for whatever a learner may tune or reward on (dreaming's reward questions);
only the evaluation reads `experience.test`.

* fact-stream: knowledge incorporation (SQuAD-shaped, at toy scale). Each experience tells new
  people of the world (curricula/world.py), drawn from its *unseen* names, so no base pretrained
  on the world has read about them. Train rows are passages only (`passages_per_entity`
  paraphrased passages per person, each telling all of its facts). Test probes ask each fact
  without the passage in `test_questions` of the world's test question paraphrases; dev probes
  ask it in `dev_questions` of the dev paraphrases, so no dev question is a test question.
  A probe's `context` is a passage that tells its fact (the in-context ceiling reads it).
* new-language: one generated language per experience (a lexicon over a shared English
  vocabulary plus a word order); parallel sentences, held-out test and dev sentences, scored by chrF.
* intents: class-incremental text classification over generated intent templates; train, test
  and dev utterances are disjoint.

`hf_dataset` (a hub name, or a local directory saved with `save_to_disk`) replaces the generator:
fact-stream reads SQuAD columns (context, question, answers; a passage's first `dev_questions`
questions are dev, the rest test), new-language reads a `translation` column per pair in
`hf_pairs`, intents reads `text` + ClassLabel `label` (e.g. banking77).
"""

from __future__ import annotations

import itertools
import os
import string
from dataclasses import dataclass, field

import datasets
import numpy as np

from somna.curricula.base import Curriculum, CurriculumConfig, Experience, StreamInfo
from somna.curricula.world import ATTRIBUTES, QUESTION_SPLITS, new_name, passage, probe, profile, question, unique_words
from somna.platform.registry import register_curriculum

COLUMNS = ("text", "prompt", "answer", "context")


def text_dataset(rows: list[dict[str, str]]) -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {column: [row.get(column, "") for row in rows] for column in COLUMNS},
        features=datasets.Features({column: datasets.Value("string") for column in COLUMNS}),
    )


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

    def experience(self, index: int, train: list[dict], test: list[dict], dev: list[dict], classes: tuple[int, ...] = ()) -> Experience:
        return Experience(
            index=index,
            train=text_dataset(train),
            test=text_dataset(test),
            dev=text_dataset(dev),
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
@dataclass
class FactStreamConfig(TextCurriculumConfig):
    name: str = "fact-stream"
    num_experiences: int = 4
    entities_per_experience: int = 10  # new people per experience
    facts_per_entity: int = 5  # facts told about each (of the world's 7 attributes)
    passages_per_entity: int = 2  # train rows per person: passages telling all its facts in other words and order
    test_questions: int = 2  # test probes per fact, each in another test paraphrase (of 3)
    dev_questions: int = 1  # dev probes per fact, in dev paraphrases (of 3); hub path: dev questions per passage
    hf_max_passages: int = 40  # hub path: passages used in all


@register_curriculum("fact-stream")
class FactStream(TextCurriculum):
    """Passages about people the base never read about, probed by no-context questions in unseen paraphrases."""

    Config = FactStreamConfig
    scenarios = ("domain", "task")
    default_scenario = "domain"

    def build(self) -> list[Experience]:
        config = self.config
        if not 1 <= config.facts_per_entity <= len(ATTRIBUTES):
            raise ValueError(f"curriculum.facts_per_entity must be in 1..{len(ATTRIBUTES)}, got {config.facts_per_entity}")
        for key, split in (("test_questions", "test"), ("dev_questions", "dev")):
            low = 1 if split == "test" else 0
            if not low <= getattr(config, key) <= len(QUESTION_SPLITS[split]):
                raise ValueError(f"curriculum.{key} must be in {low}..{len(QUESTION_SPLITS[split])}, got {getattr(config, key)}")
        if min(config.entities_per_experience, config.passages_per_entity) < 1:
            raise ValueError("curriculum.entities_per_experience and passages_per_entity must be >= 1")
        if config.hf_dataset:
            return self._from_squad()
        rng = np.random.default_rng(self.seed)
        taken: set[str] = set()
        experiences = []
        for index in range(config.num_experiences):
            train, test, dev = [], [], []
            for _ in range(config.entities_per_experience):
                entity = profile(rng, new_name(rng, True, taken), True, taken)
                attributes = [str(a) for a in rng.choice(list(ATTRIBUTES), size=config.facts_per_entity, replace=False)]
                passages = [passage(rng, entity, [str(a) for a in rng.permutation(attributes)]) for _ in range(config.passages_per_entity)]
                train += [{"text": text, "context": text} for text in passages]
                for attribute in attributes:
                    for split, rows, count in (("test", test, config.test_questions), ("dev", dev, config.dev_questions)):
                        for paraphrase in rng.choice(QUESTION_SPLITS[split], size=count, replace=False):
                            rows.append(probe(*question(entity, attribute, int(paraphrase)), passages[0]))
            order = rng.permutation(len(train))
            experiences.append(self.experience(index, [train[i] for i in order], test, dev))
        return experiences

    def _from_squad(self) -> list[Experience]:
        """SQuAD-shaped rows (context, question, answers.text) grouped by passage into experiences."""
        rows = load_hf(self.config.hf_dataset, self.config.hf_split)
        by_context: dict[str, list[dict]] = {}
        for row in rows:
            if row["context"] not in by_context and len(by_context) == self.config.hf_max_passages:
                continue
            answer = row["answers"]["text"][0] if row["answers"]["text"] else ""
            by_context.setdefault(row["context"], []).append(probe(f"Q: {row['question']} A:", answer, row["context"]))
        contexts = list(by_context)
        if len(contexts) < self.config.num_experiences:
            raise ValueError(f"curriculum.hf_dataset has {len(contexts)} passages, fewer than num_experiences={self.config.num_experiences}")
        experiences = []
        for index, chunk in enumerate(np.array_split(np.arange(len(contexts)), self.config.num_experiences)):
            train, test, dev = [], [], []
            for c in chunk:
                train.append({"text": contexts[c], "context": contexts[c]})
                questions = by_context[contexts[c]]
                held = min(self.config.dev_questions, len(questions) - 1)  # every passage keeps a test question
                dev += questions[:held]
                test += questions[held:]
            experiences.append(self.experience(index, train, test, dev))
        return experiences


# -- new-language -----------------------------------------------------------------------------
SUBJECTS = ("the cat", "the dog", "a bird", "the man", "the woman", "a child", "the farmer", "a girl")
VERBS = ("sees", "likes", "eats", "finds", "wants", "hides")
OBJECTS = ("the fish", "an apple", "the ball", "the house", "a tree", "the cake", "a hat", "the boat")
WORD_ORDERS = ("svo", "sov", "vso", "osv", "ovs", "vos")


@dataclass
class NewLanguageConfig(TextCurriculumConfig):
    name: str = "new-language"
    num_experiences: int = 3
    train_sentences: int = 80  # translated sentences per language (train rows)
    test_sentences: int = 100  # held-out sentences to translate (test probes)
    dev_sentences: int = 16  # other held-out sentences (dev probes)
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
        sizes = (config.train_sentences, config.test_sentences, config.dev_sentences)
        if sum(sizes) > len(sentences) or min(sizes) < 0:
            raise ValueError(f"curriculum.train_sentences + test_sentences + dev_sentences must be <= {len(sentences)} (each >= 0), got {sum(sizes)}")
        rng = np.random.default_rng(self.seed)
        content = sorted({w.split()[-1] for w in SUBJECTS + OBJECTS} | set(VERBS))
        taken: set[str] = set()
        experiences = []
        for index in range(config.num_experiences):
            lexicon = dict(zip(content, unique_words(rng, len(content), 2, taken)))
            order = WORD_ORDERS[int(rng.integers(len(WORD_ORDERS)))]
            tag = f"l{index}"
            rows = []
            for i in rng.permutation(len(sentences))[: sum(sizes)]:
                words = dict(zip("svo", sentences[i]))
                foreign = " ".join(lexicon[words[role].split()[-1]] for role in order)
                rows.append(probe(f"en: {' '.join(sentences[i])} | {tag}:", foreign))
            experiences.append(self.experience(index, *split_rows(rows, sizes)))
        return experiences

    def _from_translation(self) -> list[Experience]:
        """Rows with a `translation` dict {source: ..., target: ...}; one pair (subset) per experience: 70% train, 20% test, 10% dev."""
        if len(self.config.hf_pairs) != self.config.num_experiences:
            raise ValueError(f"curriculum.hf_pairs needs one pair per experience ({self.config.num_experiences}), got {list(self.config.hf_pairs)}")
        experiences = []
        for index, pair in enumerate(self.config.hf_pairs):
            source, target = pair.split("-")
            data = load_hf(self.config.hf_dataset, self.config.hf_split, pair)
            rows = [probe(f"{source}: {r['translation'][source]} | {target}:", r["translation"][target]) for r in data.select(range(min(len(data), self.config.hf_max_sentences)))]
            train, dev = max(1, int(0.7 * len(rows))), int(0.1 * len(rows))
            experiences.append(self.experience(index, *split_rows(rows, (train, len(rows) - train - dev, dev))))
        return experiences


def split_rows(rows: list[dict], sizes: tuple[int, int, int]) -> tuple[list[dict], list[dict], list[dict]]:
    """Consecutive (train, test, dev) slices of `rows` with the given sizes."""
    train, test, _ = sizes
    return rows[:train], rows[train : train + test], rows[train + test : sum(sizes)]


# -- intents ----------------------------------------------------------------------------------
INTENTS: dict[str, tuple[str, ...]] = {
    "weather": ("what is the weather in {place} {day}", "will it rain in {place} {day}", "is it cold in {place} {day}", "weather for {place}"),
    "alarm": ("set an alarm for {time} {day}", "wake me up at {time} {day}", "alarm at {time} {day}", "i need to get up at {time}"),
    "music": ("play some {genre} {day}", "put on {genre} music", "i want to hear {genre} {day}", "can you play {genre} songs"),
    "timer": ("start a timer for {minutes} minutes for {what}", "count down {minutes} minutes for {what}", "timer {minutes} min",
              "remind me about {what} in {minutes} minutes"),
    "food": ("order {dish} for {day}", "i am hungry for {dish} {day}", "get me {dish} {day}", "deliver {dish} to {place}"),
    "travel": ("book a train to {place} {day}", "find a flight to {place} {day}", "how do i get to {place}", "i want to travel to {place} {day}"),
}
SLOTS: dict[str, tuple[str, ...]] = {
    "place": ("paris", "rome", "oslo", "lima", "cairo", "tokyo", "delhi", "quito", "perth", "dakar"),
    "day": ("today", "tomorrow", "on monday", "tonight", "this weekend", "on friday"),
    "time": ("6 am", "7 am", "noon", "9 pm", "8 am", "5 pm", "midnight", "10 am"),
    "genre": ("jazz", "rock", "folk", "techno", "blues", "reggae", "opera", "salsa"),
    "minutes": ("5", "10", "15", "20", "25", "30", "40", "45"),
    "dish": ("pizza", "sushi", "tacos", "noodles", "curry", "salad", "burgers", "dumplings"),
    "what": ("the pasta", "the tea", "my nap", "the oven", "the eggs", "the laundry", "the bread", "my workout"),
}


def every_filling(template: str) -> list[str]:
    """`template` with its slots filled in every combination of SLOTS values."""
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    return [template.format(**dict(zip(names, values))) for values in itertools.product(*(SLOTS[name] for name in names))]


@dataclass
class IntentsConfig(TextCurriculumConfig):
    name: str = "intents"
    num_experiences: int = 3
    intents_per_experience: int = 2  # new classes per experience
    train_per_intent: int = 30  # labelled utterances per new intent (train rows)
    test_per_intent: int = 50  # held-out utterances per intent (test probes)
    dev_per_intent: int = 10  # other held-out utterances (dev probes)


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
        sizes = (config.train_per_intent, config.test_per_intent, config.dev_per_intent)
        if min(sizes) < 0 or sum(sizes) > min(len(pool) for pool in utterances):
            raise ValueError(
                f"curriculum.train_per_intent + test_per_intent + dev_per_intent must be <= {min(len(p) for p in utterances)} "
                f"(the smallest intent's distinct utterances), got {sum(sizes)}"
            )
        self._names = names
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(names))[:needed].reshape(config.num_experiences, -1)
        experiences = []
        for index, labels in enumerate(order):
            train, test, dev = [], [], []
            for label in labels:
                pool = utterances[label]
                rows = [probe(f"{pool[i]} =>", names[label]) for i in rng.permutation(len(pool))[: sum(sizes)]]
                for split, part in zip((train, test, dev), split_rows(rows, sizes)):
                    split += part
            shuffle = rng.permutation(len(train))
            experiences.append(self.experience(index, [train[i] for i in shuffle], test, dev, tuple(int(label) for label in labels)))
        return experiences

    def _labelled_utterances(self) -> tuple[list[str], list[list[str]]]:
        """(intent names, distinct utterances per intent), generated or from a hub dataset with `text` + ClassLabel `label`."""
        if self.config.hf_dataset:
            data = load_hf(self.config.hf_dataset, self.config.hf_split)
            names = [name.replace("_", " ") for name in data.features["label"].names]
            utterances: list[list[str]] = [[] for _ in names]
            for row in data:
                utterances[row["label"]].append(row["text"].lower())
            kept = [i for i, u in enumerate(utterances) if u]
            return [names[i] for i in kept], [list(dict.fromkeys(utterances[i])) for i in kept]
        names = list(INTENTS)
        return names, [sorted({text for template in INTENTS[name] for text in every_filling(template)}) for name in names]

    @property
    def num_classes(self) -> int:
        return len(self._names)
