"""An embedded, offline toy language so attnfit trains and tests with no downloads.

The language comes from a small probabilistic grammar (about 400 word types) with structure a small model
can learn in minutes on a CPU and that a unigram model cannot capture:

* number agreement between a subject and its verb, also across a relative clause
  ("the small dogs that the cat sees run ."),
* determiners that agree with their noun ("a dog", "these dogs"),
* transitive verbs take an object, intransitive verbs an optional adverb,
* each document keeps one *topic* (farm, sea, kitchen, ...) that picks its nouns, verbs and adjectives,
  so earlier sentences predict the vocabulary of later ones.

Words and punctuation are separated by single spaces; one document is one line.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from attnfit.atomic import atomic_write
from attnfit.errors import ConfigError

CORPUS_VERSION = 1

# Determiners by number; "the" and the possessives work for both.
_DET_SG = ["the"] * 6 + ["a"] * 3 + ["this", "that", "every", "one", "my", "his", "her", "their"]
_DET_PL = ["the"] * 6 + ["these", "those", "some", "many", "two", "three", "all", "my", "his", "her", "their"]

_ADJ = [
    "small",
    "big",
    "old",
    "young",
    "happy",
    "sad",
    "red",
    "green",
    "brown",
    "white",
    "black",
    "tall",
    "quiet",
    "loud",
    "fast",
    "slow",
    "clever",
    "kind",
    "brave",
    "tired",
    "hungry",
    "little",
    "strong",
    "dark",
]

_ADV = ["quickly", "slowly", "quietly", "happily", "often", "again", "together", "alone", "early", "late"]
_PREP = ["in", "on", "near", "under", "behind", "with", "beside", "across", "into", "from"]
_OPENERS = ["then", "later", "today", "suddenly", "meanwhile", "after that ,", "in the morning ,", "at night ,"]

_IRREGULAR_NOUNS = {
    "child": "children",
    "man": "men",
    "woman": "women",
    "mouse": "mice",
    "sheep": "sheep",
    "fish": "fish",
    "deer": "deer",
    "wolf": "wolves",
    "leaf": "leaves",
    "knife": "knives",
    "shelf": "shelves",
    "person": "people",
}


def _plural(noun: str) -> str:
    if noun in _IRREGULAR_NOUNS:
        return _IRREGULAR_NOUNS[noun]
    if noun.endswith(("s", "sh", "ch", "x")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _third_person(verb: str) -> str:
    if verb.endswith(("s", "sh", "ch", "x", "o")):
        return verb + "es"
    if verb.endswith("y") and verb[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


# topic: (animate nouns, inanimate nouns, transitive verbs, intransitive verbs)
_TOPICS = {
    "farm": (
        "farmer cow horse pig sheep hen",
        "barn field fence tractor apple egg",
        "feed pull carry clean milk",
        "sleep graze work",
    ),
    "city": (
        "driver officer woman man artist",
        "bus car street bridge shop ticket",
        "drive visit buy sell paint",
        "talk hurry shout",
    ),
    "school": (
        "teacher student girl boy child",
        "book pencil desk lesson letter story",
        "read write teach draw open",
        "study learn sit",
    ),
    "sea": (
        "sailor fish whale captain crab",
        "boat ship wave rope net island",
        "catch sail push hold throw",
        "swim dive float",
    ),
    "forest": (
        "fox bear wolf deer owl rabbit",
        "tree river stone nest leaf path",
        "hunt climb smell hide cross",
        "run howl jump",
    ),
    "kitchen": (
        "cook chef baker mother father",
        "bread cake soup knife pot plate",
        "bake cut taste wash drop",
        "cook hum eat",
    ),
    "music": (
        "singer musician dancer drummer fan",
        "song drum guitar piano stage bell",
        "play tune ring sing hear",
        "dance clap cheer",
    ),
    "space": (
        "robot pilot scientist astronaut alien",
        "star planet rocket moon computer engine",
        "build fix launch measure fly",
        "fly think count",
    ),
}
# Verbs any topic may use, so topics share some structure.
_COMMON_TRANSITIVE = ["see", "like", "find", "watch", "follow", "want", "love"]
_COMMON_INTRANSITIVE = ["walk", "wait", "rest", "smile", "sleep", "laugh"]
_TOPIC_ADJ = {
    "farm": "muddy fat woolly",
    "city": "busy crowded modern",
    "school": "new difficult funny",
    "sea": "salty wet blue",
    "forest": "green tall wild",
    "kitchen": "hot sweet fresh",
    "music": "loud soft famous",
    "space": "distant shiny strange",
}


def _build_topics() -> list[tuple]:
    """Precompute (subject, object, verb) tables per topic as (singular, plural) pairs for speed."""
    topics = []
    for name, (animate, inanimate, trans, intrans) in _TOPICS.items():
        subj = [(n, _plural(n)) for n in animate.split()]
        obj = subj + [(n, _plural(n)) for n in inanimate.split()]
        # topic verbs are listed twice so they are twice as likely as the shared ones
        vt = [(_third_person(v), v) for v in trans.split() * 2 + _COMMON_TRANSITIVE]
        vi = [(_third_person(v), v) for v in intrans.split() * 2 + _COMMON_INTRANSITIVE]
        topics.append((subj, obj, vt, vi, _TOPIC_ADJ[name].split() * 3 + _ADJ))
    return topics


_TOPIC_TABLES = _build_topics()
_ALL_TOPIC_TABLES = (
    [p for t in _TOPIC_TABLES for p in t[0]],
    [p for t in _TOPIC_TABLES for p in t[1]],
    [p for t in _TOPIC_TABLES for p in t[2]],
    [p for t in _TOPIC_TABLES for p in t[3]],
)


def vocabulary() -> set[str]:
    """Every word type the grammar can produce (for tests and vocab-size sanity checks)."""
    words = set(_DET_SG + _DET_PL + _ADJ + _ADV + _PREP + [".", ",", "that", "and", "but"])
    for opener in _OPENERS:
        words.update(opener.split())
    for subj, obj, vt, vi, adjs in _TOPIC_TABLES:
        for pairs in (subj, obj, vt, vi):
            for sg, pl in pairs:
                words.update((sg, pl))
        words.update(adjs)
    return words


def _grammar(
    rng: random.Random, tables: tuple, out: list[str], clauses: list | None = None, p_plural: float = 0.4
) -> Callable[[], None]:
    """The sentence grammar over one topic's ``tables``; returns ``sentence()``, which appends one sentence to ``out``.

    With a ``clauses`` list every main clause records ``(head, verb)``: the indices in ``out`` of its subject's
    head noun and of its main verb (a relative clause may come between them). ``p_plural`` is the chance that a
    main clause's subject is plural.
    """
    rand = rng.random
    subj_nouns, obj_nouns, vts, vis, adjs = tables
    any_subj, any_obj, any_vt, any_vi = _ALL_TOPIC_TABLES
    add = out.append

    def noun_phrase(nouns: list, plural: int, relative: float) -> int:
        dets = _DET_PL if plural else _DET_SG
        add(dets[int(rand() * len(dets))])
        r = rand()
        if r < 0.45:
            add(adjs[int(rand() * len(adjs))])
            if r < 0.12:
                add(adjs[int(rand() * len(adjs))])
        # 5% of nouns come from any topic so the topic is a strong but not perfect cue
        table = nouns if rand() < 0.95 else (any_subj if nouns is subj_nouns else any_obj)
        head = len(out)
        add(table[int(rand() * len(table))][plural])
        if rand() < relative:
            add("that")
            if rand() < 0.5:  # subject relative: "the dog that chases the cat"
                verb_phrase(plural, allow_relative=False)
            else:  # object relative: "the dogs that the cat sees"
                other = 1 if rand() < 0.4 else 0
                noun_phrase(subj_nouns, other, 0.0)
                add(vts[int(rand() * len(vts))][other])
        return head

    def verb_phrase(plural: int, allow_relative: bool) -> None:
        if rand() < 0.6:
            table = vts if rand() < 0.95 else any_vt
            add(table[int(rand() * len(table))][plural])
            noun_phrase(obj_nouns, 1 if rand() < 0.4 else 0, 0.12 if allow_relative else 0.0)
        else:
            table = vis if rand() < 0.95 else any_vi
            add(table[int(rand() * len(table))][plural])
            if rand() < 0.35:
                add(_ADV[int(rand() * len(_ADV))])
        if rand() < 0.3:
            add(_PREP[int(rand() * len(_PREP))])
            noun_phrase(obj_nouns, 1 if rand() < 0.3 else 0, 0.0)

    def clause() -> None:
        plural = 1 if rand() < p_plural else 0
        head = noun_phrase(subj_nouns, plural, 0.25)
        verb = len(out)
        verb_phrase(plural, allow_relative=True)
        if clauses is not None:
            clauses.append((head, verb))

    def sentence() -> None:
        if rand() < 0.12:
            add(_OPENERS[int(rand() * len(_OPENERS))])
        clause()
        r = rand()
        if r < 0.15:
            add("and" if r < 0.1 else ", but")
            clause()
        add(".")

    return sentence


def _document(rng: random.Random) -> str:
    """One document: 3-8 sentences about a single topic."""
    out: list[str] = []
    sentence = _grammar(rng, _TOPIC_TABLES[int(rng.random() * len(_TOPIC_TABLES))], out)
    for _ in range(3 + int(rng.random() * 6)):
        sentence()
    return " ".join(out)


def generate_lm_corpus(num_docs: int, seed: int = 0) -> list[str]:
    """Return ``num_docs`` deterministic toy-English documents (one string each, no newlines)."""
    rng = random.Random(seed)
    return [_document(rng) for _ in range(num_docs)]


def _atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _meta_matches(meta_path: Path, meta: dict, paths: dict[str, Path]) -> bool:
    """True if ``meta_path`` holds exactly ``meta`` and every file in ``paths`` exists, so they can be reused."""
    try:
        current = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return current == meta and all(p.is_file() for p in paths.values())


def write_embedded_corpus(
    directory: Path, num_train_docs: int = 20000, num_val_docs: int = 1000, seed: int = 0
) -> dict[str, Path]:
    """Write train.txt / validation.txt (one doc per line) unless identical ones exist; return their paths.

    Reusing the files keeps their modification times, so the datasets cache built from them stays valid.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"train": directory / "train.txt", "validation": directory / "validation.txt"}
    meta_path = directory / "meta.json"
    meta = {"version": CORPUS_VERSION, "num_train_docs": num_train_docs, "num_val_docs": num_val_docs, "seed": seed}
    if _meta_matches(meta_path, meta, paths):
        return paths
    meta_path.unlink(missing_ok=True)  # invalidate first: a crash below must not leave stale meta behind
    _atomic_write_text(paths["train"], "\n".join(generate_lm_corpus(num_train_docs, seed)) + "\n")
    _atomic_write_text(paths["validation"], "\n".join(generate_lm_corpus(num_val_docs, seed + 1_000_003)) + "\n")
    _atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
    return paths


# --- an embedded classification task: is subject-verb agreement intact? --------------------------------------

CLASSIFICATION_VERSION = 1
CLASSIFICATION_LABELS = ("grammatical", "ungrammatical")
# every verb form -> the same verb in the other number ("runs" <-> "run"); no form belongs to two verbs
_FLIP_VERB = {
    form: pair[1 - i] for t in _TOPIC_TABLES for table in t[2:4] for pair in table for i, form in enumerate(pair)
}
# nouns whose plural is the singular ("sheep"): their number is invisible, so flipping their verb proves nothing
_NUMBERLESS_NOUNS = frozenset(sg for t in _TOPIC_TABLES for sg, pl in t[0] + t[1] if sg == pl)


def _minimal_pair(rng: random.Random) -> tuple[str, str] | None:
    """A grammatical sentence and the same sentence with the number of one main verb flipped.

    The flipped clause is one whose subject is separated from its verb by a relative clause when the sentence has
    one ("the dog that chases the cats *run*"). None when no main clause shows its subject's number.
    """
    out: list[str] = []
    clauses: list[tuple[int, int]] = []
    sentence = _grammar(rng, _TOPIC_TABLES[int(rng.random() * len(_TOPIC_TABLES))], out, clauses, p_plural=0.5)
    sentence()
    candidates = [(head, verb) for head, verb in clauses if out[head] not in _NUMBERLESS_NOUNS]
    if not candidates:
        return None
    across = [c for c in candidates if c[1] - c[0] > 1]
    _, verb = rng.choice(across or candidates)
    good = " ".join(out)
    out[verb] = _FLIP_VERB[out[verb]]
    return good, " ".join(out)


def _classification_examples(num_examples: int, seed: int, exclude: set[str] | frozenset[str] = frozenset()) -> list:
    """``generate_classification_corpus`` without sentences in ``exclude`` and without duplicates."""
    rng = random.Random(seed)
    seen = set(exclude)
    examples: list[dict] = []
    while len(examples) < num_examples:
        pair = _minimal_pair(rng)
        if pair is None or pair[0] in seen or pair[1] in seen:
            continue
        seen.update(pair)
        examples.append({"text": pair[0], "label": CLASSIFICATION_LABELS[0]})
        examples.append({"text": pair[1], "label": CLASSIFICATION_LABELS[1]})
    del examples[num_examples:]  # an odd count drops the last ungrammatical twin
    rng.shuffle(examples)
    return examples


def generate_classification_corpus(num_examples: int, seed: int = 0) -> list[dict]:
    """``num_examples`` shuffled ``{"text", "label"}`` examples of agreement judgement ("grammatical"/"ungrammatical").

    Sentences come from the grammar of ``generate_lm_corpus`` (half with plural subjects). They come in minimal
    pairs: every grammatical sentence appears once more with one main verb in the wrong number, preferably across
    a relative clause, so both classes use the same words and only agreement tells them apart. Subjects whose
    number is invisible ("the sheep") are never the ones broken. Deterministic per ``seed``; no duplicates.
    """
    return _classification_examples(num_examples, seed)


def write_embedded_classification(
    directory: Path, num_train: int = 2000, num_val: int = 500, num_test: int = 500, seed: int = 0
) -> dict[str, Path]:
    """Write train/validation/test.jsonl (fields text, label) unless identical ones exist; return their paths.

    Each split has its own seed and shares no sentence with the earlier ones.
    """
    sizes = {"train": num_train, "validation": num_val, "test": num_test}
    meta = {"kind": "classification", "version": CLASSIFICATION_VERSION, "seed": seed}
    return write_disjoint_splits(
        directory, sizes, meta, lambda n, split_seed, seen: _classification_examples(n, split_seed, seen), "text", 2
    )


def write_disjoint_splits(
    directory: str | Path,
    sizes: dict[str, int],
    meta: dict,
    generate: Callable[[int, int, set[str]], list[dict]],
    key: str,
    min_size: int = 1,
) -> dict[str, Path]:
    """Write ``SPLIT.jsonl`` for each of ``sizes`` with ``generate(n, seed, seen)`` unless files written with the
    same ``meta`` exist (reused files keep their times, so caches built from them stay valid). Each split gets
    its own seed and excludes the ``key`` values of the splits before it."""
    for split, n in sizes.items():
        if n < min_size:
            raise ConfigError(f"the embedded {meta['kind']} {split} split needs at least {min_size} rows, got {n}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {split: directory / f"{split}.jsonl" for split in sizes}
    meta_path = directory / "meta.json"
    meta = {**meta, **{f"num_{split}": n for split, n in sizes.items()}}
    if _meta_matches(meta_path, meta, paths):
        return paths
    meta_path.unlink(missing_ok=True)  # invalidate first: a crash below must not leave stale meta behind
    seen: set[str] = set()
    for i, (split, n) in enumerate(sizes.items()):
        rows = generate(n, meta["seed"] + i * 1_000_003, seen)
        seen.update(row[key] for row in rows)
        _atomic_write_text(paths[split], "".join(json.dumps(row) + "\n" for row in rows))
    _atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
    return paths
