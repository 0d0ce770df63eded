"""A procedurally generated world that a base language model is pretrained on, and the names it never sees.

The world is people with typed attributes: values from a closed vocabulary (job, color, food, pet,
age) and relations to other named entities (home: a town, friend: a person). Every fact can be told
by several paraphrased statements and asked by several paraphrased questions. Three kinds of
documents come out of it, all plain strings (the `text` / `prompt` / `answer` / `context` columns
of somna.curricula.text):
  passage          "Bakuto lives in Tomelin. the favorite food of Bakuto is rice."
  reading item     prompt "{passage} Q: {question} A:", answer: the fact's value, read from the passage
  closed-book QA   prompt "Q: {question} A:", answer: the fact, recalled from the weights
  recall item      a passage about a fresh person as a document of its own, and its question
                   ("Q: {question} A:", answer) asked in a later document of the same sequence

A pretraining sequence is a *chain* of `chain` documents (one by default), each "<s>...</s>" as if
read alone: with more, a memory-kernel base learns to carry its state across document
boundaries, and recall items make it answer from that state, which is what the text sleep
learner's `kernel` fast memory asks of it (learners/text/fast_memory.py).

Half of the world's people (`qa_fraction`) are also asked about closed-book in pretraining; the
others are only told about in passages. Asking about the second half measures what the first
half taught: answering questions about facts read only in passages (Allen-Zhu & Li, "Physics of
Language Models 3.1": mixed training with paraphrased passages makes knowledge extractable),
which is what a fact stream asks of a model that reads its passages.

Names are made-up words, and a fixed hash splits their space in two. *Unseen* names (one in
UNSEEN_MODULUS) never appear in pretraining: the entities of the fact streams and of the base's
reading evaluation are drawn from them, so a base pretrained on any world has never read about
them. The world's own people (whose facts pretraining teaches closed-book) and the fresh people
of its reading items use the other names.

Question paraphrases are split too (QUESTION_SPLITS): pretraining asks with all of them; a fact
stream asks its test probes with the `test` ones and its dev questions (rewards, selection) with
the `dev` ones, so a dev question is never a test question.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"
UNSEEN_MODULUS = 4  # one name in four is reserved for what the base never reads


@dataclass(frozen=True)
class Attribute:
    """One typed attribute: `kind` is "value" (from `values`), or the kind of entity it relates to."""

    kind: str
    statements: tuple[str, ...]  # paraphrases with {e} (the entity) and {v} (the value)
    questions: tuple[str, ...]  # paraphrases with {e}
    values: tuple[str, ...] = ()


ATTRIBUTES: dict[str, Attribute] = {
    "home": Attribute(
        "town",
        ("{e} lives in {v}.", "the home of {e} is {v}.", "{e} has a house in {v}.", "{e} is from the town of {v}."),
        ("where does {e} live?", "in which town does {e} live?", "what is the home town of {e}?",
         "where is the home of {e}?", "which town is {e} from?", "where does {e} have a house?"),
    ),
    "friend": Attribute(
        "person",
        ("{e} is a friend of {v}.", "the best friend of {e} is {v}.", "{e} spends every day with {v}.", "{v} is the closest friend of {e}."),
        ("who is the friend of {e}?", "who is the best friend of {e}?", "who does {e} spend every day with?",
         "who is {e} friends with?", "name the closest friend of {e}.", "which person is a friend of {e}?"),
    ),
    "job": Attribute(
        "value",
        ("{e} works as a {v}.", "the job of {e} is {v}.", "{e} earns a living as a {v}.", "by trade {e} is a {v}."),
        ("what is the job of {e}?", "what does {e} work as?", "what is the trade of {e}?",
         "how does {e} earn a living?", "what work does {e} do?", "which job does {e} have?"),
        ("baker", "farmer", "painter", "doctor", "sailor", "teacher", "miner", "weaver", "singer", "potter", "hunter", "tailor"),
    ),
    "color": Attribute(
        "value",
        ("the favorite color of {e} is {v}.", "{e} likes the color {v} best.", "{e} loves everything {v}.", "{v} is the color {e} likes most."),
        ("what is the favorite color of {e}?", "which color does {e} like best?", "what color does {e} love?",
         "which color is the favorite of {e}?", "what color does {e} like most?", "name the favorite color of {e}."),
        ("red", "blue", "green", "gold", "gray", "pink", "white", "black", "brown", "purple"),
    ),
    "food": Attribute(
        "value",
        ("{e} eats {v}.", "the favorite food of {e} is {v}.", "{e} likes to eat {v}.", "every night {e} has {v} for dinner."),
        ("what does {e} eat?", "what is the favorite food of {e}?", "what does {e} like to eat?",
         "what does {e} have for dinner?", "which food does {e} like?", "name the favorite food of {e}."),
        ("rice", "fish", "bread", "plums", "nuts", "soup", "eggs", "beans", "cheese", "apples", "corn", "honey"),
    ),
    "pet": Attribute(
        "value",
        ("{e} has a pet {v}.", "the pet of {e} is a {v}.", "{e} keeps a {v} at home.", "a {v} lives with {e}."),
        ("what pet does {e} have?", "what is the pet of {e}?", "which animal does {e} keep?",
         "what animal lives with {e}?", "what kind of pet does {e} keep?", "which pet does {e} own?"),
        ("cat", "dog", "goat", "owl", "horse", "duck", "frog", "rabbit", "parrot", "mouse"),
    ),
    "age": Attribute(
        "value",
        ("{e} is {v} years old.", "the age of {e} is {v}.", "{e} turned {v} this year.", "{e} has lived for {v} years."),
        ("how old is {e}?", "what is the age of {e}?", "how many years old is {e}?",
         "what age did {e} turn this year?", "how many years has {e} lived?", "tell me the age of {e}."),
        tuple(str(n) for n in range(12, 90)),
    ),
}
QUESTION_SPLITS: dict[str, tuple[int, ...]] = {"all": (0, 1, 2, 3, 4, 5), "test": (0, 1, 2), "dev": (3, 4, 5)}


def make_word(rng: np.random.Generator, syllables: int) -> str:
    """A pronounceable made-up word (consonant-vowel syllables)."""
    return "".join(rng.choice(list(_CONSONANTS)) + rng.choice(list(_VOWELS)) for _ in range(syllables))


def unique_words(rng: np.random.Generator, count: int, syllables: int, taken: set[str]) -> list[str]:
    """`count` made-up words of `syllables` syllables, none in `taken` (which they are added to)."""
    words: list[str] = []
    while len(words) < count:
        word = make_word(rng, syllables)
        if word not in taken:
            taken.add(word)
            words.append(word)
    return words


def is_unseen(name: str) -> bool:
    """True for the names pretraining never uses (a fixed hash: the split does not depend on any config)."""
    return zlib.crc32(name.encode()) % UNSEEN_MODULUS == 0


def new_name(rng: np.random.Generator, unseen: bool, taken: set[str]) -> str:
    """A capitalised made-up name of 2-3 syllables on the requested side of the split, not in `taken` (added to it)."""
    while True:
        name = make_word(rng, int(rng.integers(2, 4))).capitalize()
        if is_unseen(name) == unseen and name not in taken:
            taken.add(name)
            return name


@dataclass(frozen=True)
class Entity:
    name: str
    facts: dict[str, str] = field(hash=False)  # attribute -> value, every attribute of ATTRIBUTES


def profile(rng: np.random.Generator, name: str, unseen: bool, taken: set[str], towns: list[str] | None = None, people: list[str] | None = None) -> Entity:
    """`name`'s value for every attribute; relations point into `towns` / `people` when given, else to new names."""
    facts = {}
    for attribute, spec in ATTRIBUTES.items():
        if spec.kind == "value":
            facts[attribute] = str(rng.choice(spec.values))
        else:
            pool = towns if spec.kind == "town" else [p for p in people or [] if p != name]
            facts[attribute] = str(rng.choice(pool)) if pool else new_name(rng, unseen, taken)
    return Entity(name, facts)


def statement(rng: np.random.Generator, entity: Entity, attribute: str) -> str:
    spec = ATTRIBUTES[attribute]
    return str(rng.choice(spec.statements)).format(e=entity.name, v=entity.facts[attribute])


def passage(rng: np.random.Generator, entity: Entity, attributes: list[str]) -> str:
    """The facts `attributes` of `entity`, each in a random paraphrase, in the given order."""
    return " ".join(statement(rng, entity, attribute) for attribute in attributes)


def question(entity: Entity, attribute: str, paraphrase: int) -> tuple[str, str]:
    """(prompt "Q: ... A:", answer) asking `attribute` of `entity` with question paraphrase `paraphrase`."""
    return f"Q: {ATTRIBUTES[attribute].questions[paraphrase].format(e=entity.name)} A:", entity.facts[attribute]


def pick_facts(rng: np.random.Generator, low: int, high: int) -> list[str]:
    """Between `low` and `high` distinct attributes, in random order."""
    count = int(rng.integers(low, high + 1))
    return [str(a) for a in rng.choice(list(ATTRIBUTES), size=count, replace=False)]


Chain = list[tuple[str, str]]  # (prompt, completion) documents read one after another in one sequence


def probe(prompt: str, answer: str, context: str = "") -> dict[str, str]:
    """A row in the text curricula's columns: `text` is the whole line a model would read."""
    return {"text": f"{prompt} {answer}", "prompt": prompt, "answer": answer, "context": context}


@dataclass
class WorldConfig:
    """The world a base model is pretrained on (`somna pretrain`)."""

    seed: int = 0  # the world's people and towns
    num_entities: int = 200  # people whose facts pretraining teaches (closed-book QA is about them)
    num_towns: int = 30  # the towns they live in
    min_facts: int = 2  # facts per passage, at least
    max_facts: int = 4  # and at most
    reading: float = 0.5  # pretraining mixture: reading items about fresh people ...
    passages: float = 0.25  # ... passages about the world's people ...
    closed_book: float = 0.25  # ... and closed-book questions about them ...
    recall: float = 0.0  # ... and recall items: a passage about a fresh person, its question at the chain's end
    qa_fraction: float = 0.5  # the share of the world's people closed-book questions are asked about (the rest: passages only)
    chain: int = 1  # mixture items per pretraining sequence, each a document of its own (recall questions follow them)

    def __post_init__(self) -> None:
        if not 1 <= self.min_facts <= self.max_facts <= len(ATTRIBUTES):
            raise ValueError(f"world: need 1 <= min_facts <= max_facts <= {len(ATTRIBUTES)}, got {self.min_facts}, {self.max_facts}")
        if min(self.num_entities, self.num_towns) < 2:
            raise ValueError("world: num_entities and num_towns must be >= 2")
        weights = (self.reading, self.passages, self.closed_book, self.recall)
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError("world: the mixture weights reading, passages, closed_book, recall must be >= 0 and not all 0")
        if self.chain < 1:
            raise ValueError(f"world: chain must be >= 1, got {self.chain}")
        if not 0 < self.qa_fraction <= 1:
            raise ValueError(f"world: qa_fraction must be in (0, 1], got {self.qa_fraction}")


class World:
    """The world's people (fixed by the seed) and the documents pretraining and its evaluation read."""

    KINDS = ("reading", "passages", "closed_book", "recall")

    def __init__(self, config: WorldConfig):
        self.config = config
        rng = np.random.default_rng(config.seed)
        self.taken: set[str] = set()
        self.towns = [new_name(rng, False, self.taken) for _ in range(config.num_towns)]
        people = [new_name(rng, False, self.taken) for _ in range(config.num_entities)]
        self.entities = [profile(rng, name, False, self.taken, self.towns, people) for name in people]  # friends: other people of the world
        self.asked = self.entities[: max(1, round(config.qa_fraction * len(self.entities)))]  # closed-book QA in pretraining
        self.told = self.entities[len(self.asked) :]  # passages only
        weights = np.array([config.reading, config.passages, config.closed_book, config.recall], dtype=float)
        self.mixture = weights / weights.sum()

    def fresh_entity(self, rng: np.random.Generator, unseen: bool) -> Entity:
        """A person outside the world (new names throughout), on either side of the name split."""
        taken = set(self.taken)
        return profile(rng, new_name(rng, unseen, taken), unseen, taken)

    def reading_item(self, rng: np.random.Generator, unseen: bool, paraphrases: tuple[int, ...] = QUESTION_SPLITS["all"]) -> dict[str, str]:
        """A passage about a fresh person and a question about one of its facts (`context` = the passage)."""
        entity = self.fresh_entity(rng, unseen)
        attributes = pick_facts(rng, self.config.min_facts, self.config.max_facts)
        text = passage(rng, entity, attributes)
        prompt, answer = question(entity, str(rng.choice(attributes)), int(rng.choice(paraphrases)))
        return probe(f"{text} {prompt}", answer, text)

    def closed_book_item(self, rng: np.random.Generator, people: list[Entity] | None = None) -> dict[str, str]:
        """A question about one of `people` (default: those pretraining asks about), to be answered from memory."""
        people = people or self.asked
        entity = people[int(rng.integers(len(people)))]
        return probe(*question(entity, str(rng.choice(list(ATTRIBUTES))), int(rng.integers(len(QUESTION_SPLITS["all"])))))

    def world_passage(self, rng: np.random.Generator) -> str:
        entity = self.entities[int(rng.integers(len(self.entities)))]
        return passage(rng, entity, pick_facts(rng, self.config.min_facts, self.config.max_facts))

    def pretraining_chains(self, rng: np.random.Generator, count: int) -> list[Chain]:
        """`count` fresh pretraining sequences, each `chain` items of the configured mixture as (prompt, completion)
        documents, read in order (for a loop that scores completions):
          passage          ("", passage): every token
          reading item     (passage, "Q: question A: answer"): the question too, which names the person
                           the passage told about (practice at copying a name from the context, what the
                           hardest answers need), and the answer, not the passage
          closed-book QA   ("Q: question A:", answer): the answer only
          recall item      ("", passage) in its place, and ("Q: question A:", answer) after the chain's
                           items, the recall questions in random order: answered from what was read before
        Reading and recall items never use unseen names."""
        kinds = rng.choice(len(self.KINDS), size=count * self.config.chain, p=self.mixture)
        items = [self.pretraining_item(rng, self.KINDS[kind]) for kind in kinds]
        chains = []
        for start in range(0, len(items), self.config.chain):
            documents, questions = [], []
            for item in items[start : start + self.config.chain]:
                documents.append(item[0])
                questions.extend(item[1:])
            chains.append(documents + [questions[i] for i in rng.permutation(len(questions))])  # no draw for 0 or 1
        return chains

    def pretraining_item(self, rng: np.random.Generator, kind: str) -> Chain:
        """One item of the mixture: its documents (two for a recall item: the passage, then its question)."""
        if kind == "passages":
            return [("", self.world_passage(rng))]
        if kind == "closed_book":
            row = self.closed_book_item(rng)
            return [(row["prompt"], row["answer"])]
        row = self.reading_item(rng, unseen=False)
        asked = row["prompt"][len(row["context"]) + 1 :]  # "Q: ... A:" after the passage
        if kind == "reading":
            return [(row["context"], f"{asked} {row['answer']}")]
        return [("", row["context"]), (asked, row["answer"])]

    def pretraining_documents(self, rng: np.random.Generator, count: int) -> list[str]:
        """`count` documents of fresh pretraining sequences as whole texts (what a tokenizer learns its merges from)."""
        chains = self.pretraining_chains(rng, -(-count // self.config.chain))
        return [f"{prompt} {completion}" if prompt else completion for chain in chains for prompt, completion in chain][:count]

    def skill_probes(self, rng: np.random.Generator, count: int) -> dict[str, list[dict[str, str]]]:
        """Held-out evaluation items of the base's skills, `count` each:
        in_context_qa          reading comprehension about unseen people, the passage in the prompt;
        closed_book_qa_unseen  the same questions without the passage (nothing to recall: about 0);
        closed_book_qa_world   questions about the world's people pretraining asked about, from memory;
        closed_book_qa_told    questions about the world's people it only read passages about (when any)."""
        reading = [self.reading_item(rng, unseen=True) for _ in range(count)]
        probes = {
            "in_context_qa": reading,
            "closed_book_qa_unseen": [probe(row["prompt"].removeprefix(row["context"]).strip(), row["answer"]) for row in reading],
            "closed_book_qa_world": [self.closed_book_item(rng) for _ in range(count)],
        }
        if self.told:
            probes["closed_book_qa_told"] = [self.closed_book_item(rng, self.told) for _ in range(count)]
        return probes
