"""An embedded, offline extractive QA task in SQuAD format, so ``task=qa`` trains and tests with no downloads.

Each paragraph (3-6 sentences) talks about 2-3 invented people (names built from syllables) and states some of
their attributes: where they live, their job, age, pet, the colour of their boat, the instrument they play, their
favourite food. Every stated attribute is stated for at least two people with different values, so a distractor
sentence with the same attribute words sits next to the answer sentence; later sentences about the same person
may say "He"/"She" (only when that is unambiguous), and a filler sentence may be added. Each question ("What
colour is Marel's boat?", "Where does Tovik live?") asks for one stated fact; the answer is the value's span.

Values are drawn at random per paragraph, so the same city or colour belongs to different people in different
paragraphs: nothing in the question alone predicts the answer, and picking the sentence that shares most words
with the question is a weak baseline (the name is often a pronoun, the attribute words are in the distractor):
it finds the answer's sentence for about 55% of the questions, and then still has to pick the span.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from attnfit.data.synthetic import _atomic_write_text, _meta_matches
from attnfit.errors import ConfigError

QA_VERSION = 1
QA_SPLITS = ("train", "validation", "test")

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "tr", "sh", "th", "kl"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "ea"]
_CODAS = ["", "", "n", "l", "r", "s", "k", "m", "th", "v"]
_CITY_ENDINGS = ["ford", "holm", "ara", "ton", "dale", "mere", "wick", "stad"]


def _syllable(rng: random.Random) -> str:
    return rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)


def _person_name(rng: random.Random) -> str:
    """Two or three syllables, capitalised: "Marel", "Toovik"."""
    return "".join(_syllable(rng) for _ in range(2 if rng.random() < 0.75 else 3)).capitalize()


def _city_names(count: int) -> list[str]:
    """A fixed list of invented towns ("Dremholm", "Sutara"); their endings never occur in person names."""
    rng = random.Random(20260)
    names: list[str] = []
    while len(names) < count:
        name = (_syllable(rng) + rng.choice(_CITY_ENDINGS)).capitalize()
        if name not in names:
            names.append(name)
    return names


@dataclass(frozen=True)
class _Attribute:
    """One kind of fact: its values, statement templates and question templates.

    Templates hold ``{v}`` (the value, the answer span) exactly once. ``subject`` templates start with ``{s}``,
    the person's name or a pronoun; ``named`` templates mention ``{n}`` elsewhere, so they always use the name.
    """

    values: tuple[str, ...]
    subject: tuple[str, ...]
    named: tuple[str, ...]
    questions: tuple[str, ...]


_ATTRIBUTES = {
    "city": _Attribute(
        tuple(_city_names(48)),
        ("{s} lives in {v}.", "{s} has a small house in {v}.", "{s} moved to {v} many years ago.",
         "{s} grew up far away but now calls {v} home."),
        ("Most days, {n} can be found at home in {v}.",),
        ("Where does {n} live?", "In which town does {n} live?", "What town is {n}'s home?"),
    ),
    "job": _Attribute(
        ("baker", "sailor", "teacher", "painter", "doctor", "farmer", "carpenter", "singer", "pilot", "tailor",
         "gardener", "librarian", "potter", "fisher", "builder", "nurse", "jeweller", "miller", "clockmaker"),
        ("{s} works as a {v}.", "{s} earns a living as a {v}.", "{s} trained for years to become a {v}."),
        ("Everyone in the valley knows {n} as the local {v}.",),
        ("What is {n}'s job?", "What does {n} do for a living?", "What work does {n} do?"),
    ),
    "age": _Attribute(
        tuple(str(age) for age in range(18, 91)),
        ("{s} is {v} years old.", "{s} turned {v} last spring.", "{s} has just had birthday number {v}."),
        ("At {v} years of age, {n} is still very active.",),
        ("How old is {n}?", "What age is {n}?"),
    ),
    "pet": _Attribute(
        ("cat", "dog", "parrot", "rabbit", "goat", "tortoise", "hamster", "owl", "ferret", "pony", "lizard",
         "goldfish", "hedgehog"),
        ("{s} keeps a {v} at home.", "{s} owns a {v}.", "{s} has a pet {v}."),
        ("The {v} that sleeps by the fire belongs to {n}.",),
        ("What pet does {n} have?", "What animal does {n} keep?", "Which pet belongs to {n}?"),
    ),
    "boat": _Attribute(
        ("red", "blue", "green", "yellow", "purple", "orange", "white", "black", "grey", "silver", "golden",
         "brown", "pink", "teal"),
        ("{s} sails a {v} boat.", "{s} painted the family boat {v}.", "{s} owns a boat that is {v}."),
        ("{n}'s boat is {v}.", "The {v} boat in the harbour belongs to {n}."),
        ("What colour is {n}'s boat?", "What is the colour of {n}'s boat?"),
    ),
    "instrument": _Attribute(
        ("flute", "violin", "drum", "harp", "trumpet", "cello", "piano", "guitar", "banjo", "oboe", "accordion"),
        ("{s} plays the {v}.", "{s} practises the {v} every evening.", "{s} is learning the {v}."),
        ("On feast days, {n} plays the {v} in the square.",),
        ("Which instrument does {n} play?", "What instrument does {n} play?"),
    ),
    "food": _Attribute(
        ("soup", "plums", "cheese", "honey cake", "fried fish", "rice", "apple pie", "noodles", "olives",
         "bread", "roast corn", "pancakes"),
        ("{s} loves {v} more than anything.", "{s} eats {v} almost every day."),
        ("The favourite food of {n} is {v}.", "{n}'s favourite food is {v}."),
        ("What is {n}'s favourite food?", "What food does {n} like best?"),
    ),
}  # fmt: skip

_FILLERS = (
    "The weather was mild that year.",
    "It rained for most of the week.",
    "The market opened early on Tuesday.",
    "Nobody remembers exactly when this began.",
    "The road to the coast was closed for repairs.",
    "Visitors often get lost in the narrow streets.",
)
_JOINERS = (", while ", ", and ", ", but ")


@dataclass
class _Fact:
    person: int
    attribute: str
    value: str


def _render(template: str, subject: str, name: str, value: str) -> tuple[str, int]:
    """(sentence, character offset of the value in it): offsets are computed, never searched for."""
    before, after = template.split("{v}")
    before = before.format(s=subject, n=name)
    return before + value + after.format(s=subject, n=name), len(before)


def _facts(rng: random.Random, num_people: int) -> list[_Fact]:
    """1-3 attributes, each stated for 2 (or all) people with distinct values, so each has a distractor."""
    facts = []
    for attribute in rng.sample(sorted(_ATTRIBUTES), rng.randint(1, 3)):
        people = list(range(num_people))
        if num_people > 2 and rng.random() < 0.5:
            people = rng.sample(people, 2)
        for person, value in zip(people, rng.sample(_ATTRIBUTES[attribute].values, len(people)), strict=True):
            facts.append(_Fact(person, attribute, value))
    return facts


def _paragraph(rng: random.Random) -> tuple[list[str], str, list[tuple[str, str, int]]] | None:
    """(names, paragraph, questions as (question, answer, answer_start)); None if it came out too long/short."""
    num_people = rng.choice((2, 2, 3))
    names: list[str] = []
    while len(names) < num_people:
        name = _person_name(rng)
        if name not in names:
            names.append(name)
    pronouns = [rng.choice(("He", "She")) for _ in names]
    facts = _facts(rng, num_people)
    by_person = rng.random() < 0.5  # person sections allow pronouns; attribute order allows "A ..., while B ..."
    facts.sort(key=(lambda f: f.person) if by_person else (lambda f: f.attribute))

    sentences: list[list[tuple[str, _Fact | None, int]]] = []  # per sentence: (piece, fact, value offset in piece)
    previous: _Fact | None = None
    for fact in facts:
        attribute, name = _ATTRIBUTES[fact.attribute], names[fact.person]
        unambiguous = pronouns.count(pronouns[fact.person]) == 1
        use_pronoun = previous is not None and previous.person == fact.person and unambiguous and rng.random() < 0.8
        if use_pronoun or rng.random() < 0.75:
            template = rng.choice(attribute.subject)
            text, at = _render(template, pronouns[fact.person] if use_pronoun else name, name, fact.value)
        else:
            text, at = _render(rng.choice(attribute.named), name, name, fact.value)
        joinable = (
            not by_person and previous is not None and previous.attribute == fact.attribute
            and len(sentences[-1]) == 1 and text.startswith(name) and rng.random() < 0.4
        )  # fmt: skip
        if joinable:
            joiner = rng.choice(_JOINERS)
            sentences[-1].append((joiner + text, fact, len(joiner) + at))
        else:
            sentences.append([(text, fact, at)])
        previous = fact
    if rng.random() < 0.4:
        sentences.insert(rng.randint(0, len(sentences)), [(rng.choice(_FILLERS), None, 0)])
    if not 3 <= len(sentences) <= 6:
        return None

    context, answers = "", []
    for sentence in sentences:
        context += " " if context else ""
        for i, (piece, fact, at) in enumerate(sentence):
            if i + 1 < len(sentence):
                piece = piece[:-1]  # "A lives in X." + ", while B ..." -> "A lives in X, while B ..."
            if fact is not None:
                answers.append((fact, len(context) + at))
            context += piece
    questions = []
    for fact, start in answers:
        assert context[start : start + len(fact.value)] == fact.value, (context, fact)
        template = rng.choice(_ATTRIBUTES[fact.attribute].questions)
        questions.append((template.format(n=names[fact.person]), fact.value, start))
    return names, context, questions


def generate_qa_articles(num_questions: int, seed: int = 0, exclude: set[str] | None = None) -> list[dict]:
    """SQuAD-style ``data`` articles (one paragraph each) with exactly ``num_questions`` questions in all.

    Deterministic per ``seed``; contexts in ``exclude`` (and repeats) are skipped, so splits can be disjoint.
    """
    rng = random.Random(seed)
    seen = set(exclude or ())
    articles: list[dict] = []
    count = 0
    while count < num_questions:
        made = _paragraph(rng)
        if made is None or made[1] in seen:
            continue
        names, context, questions = made
        seen.add(context)
        questions = questions[: num_questions - count]
        qas = [
            {
                "id": f"s{seed}-p{len(articles)}-q{i}",
                "question": question,
                "answers": [{"text": answer, "answer_start": start}],
            }
            for i, (question, answer, start) in enumerate(questions)
        ]
        articles.append({"title": " and ".join(names), "paragraphs": [{"context": context, "qas": qas}]})
        count += len(qas)
    return articles


def write_embedded_qa(
    directory: str | Path, num_train: int = 4000, num_validation: int = 400, num_test: int = 400, seed: int = 0
) -> dict[str, Path]:
    """Write train/validation/test.json (SQuAD v1.1 format) unless files written with the same settings exist.

    Sizes count questions. Each split has its own seed and shares no paragraph with the splits before it.
    Reused files keep their modification times, so caches built from them stay valid.
    """
    sizes = {"train": num_train, "validation": num_validation, "test": num_test}
    for split, n in sizes.items():
        if n < 1:
            raise ConfigError(f"the embedded qa {split} split needs at least 1 question, got {n}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {split: directory / f"{split}.json" for split in sizes}
    meta_path = directory / "meta.json"
    meta = {"kind": "qa", "version": QA_VERSION, "seed": seed, **{f"num_{s}": n for s, n in sizes.items()}}
    if _meta_matches(meta_path, meta, paths):
        return paths
    meta_path.unlink(missing_ok=True)  # invalidate first: a crash below must not leave stale meta behind
    seen: set[str] = set()
    for i, (split, n) in enumerate(sizes.items()):
        articles = generate_qa_articles(n, seed + i * 1_000_003, seen)
        seen.update(p["context"] for a in articles for p in a["paragraphs"])
        _atomic_write_text(paths[split], json.dumps({"version": f"attnfit-qa-{QA_VERSION}", "data": articles}) + "\n")
    _atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
    return paths
