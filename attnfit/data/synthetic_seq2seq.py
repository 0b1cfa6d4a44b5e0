"""An embedded, offline translation task (toy English -> toy German) on which attention has real work to do.

Sources come from a small unambiguous grammar (subject, verb, optional object and prepositional phrase, optional
subordinate clause; noun phrases with determiners, numbers and adjectives). The target is a deterministic function
of the source: its parse, realised by other rules. A model must learn

* a word-by-word lexicon; the two vocabularies are disjoint except "." and ",";
* adjectives after their noun, in mirror order ("the big red dog" -> "der hund rot gross");
* determiners that agree with a noun further right ("the dogs" -> "die hunde", "the dog" -> "der hund");
* verb agreement: present tense "-t" singular / "-en" plural, auxiliaries "hat/haben" (past, inserted: English has
  no auxiliary there) and "wird/werden" (future), whose number only the subject shows ("saw", "will see");
* German word order: participles and infinitives go to the end of their clause ("will see the cat in the garden"
  -> "wird die katze drin der garten sehen"); subordinate clauses are verb-final ("because the dog sees the cat"
  -> "weil der hund die katze seht"); after an opening adverb or a fronted subordinate clause the main clause puts
  its finite verb before the subject ("today the dog sleeps" -> "heute schlaft der hund").

Words and punctuation are separated by single spaces; sources have 5-25 tokens, punctuation included.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import NamedTuple

from attnfit.data.synthetic import write_disjoint_splits
from attnfit.errors import ConfigError, DataError

TRANSLATION_VERSION = 1  # bump when the grammar changes, so embedded files are rewritten
MIN_SOURCE_LEN, MAX_SOURCE_LEN = 5, 25  # in whitespace-separated tokens, punctuation included

# determiner: (target before a singular noun, target before a plural noun); None where it cannot stand
_DETERMINERS = {
    "the": ("der", "die"),
    "a": ("ein", None),
    "this": ("dieser", None),
    "these": (None, "diese"),
    "every": ("jeder", None),
    "some": (None, "einige"),
    "many": (None, "viele"),
    "my": ("mein", "meine"),
    "no": ("kein", "keine"),
}
_NUMBERS = {"two": "zwei", "three": "drei", "four": "vier", "five": "fuenf"}  # plural nouns only
_NUMBER_DETERMINERS = frozenset({"the", "these", "my"})  # "the two dogs"; a number may also stand alone
_ADJECTIVES = {
    "big": "gross", "small": "klein", "old": "alt", "young": "jung", "red": "rot", "green": "gruen",
    "blue": "blau", "black": "schwarz", "white": "weiss", "happy": "froh", "sad": "traurig", "fast": "schnell",
    "slow": "langsam", "clever": "klug", "tired": "muede", "hungry": "hungrig",
}  # fmt: skip
# noun: (English plural, German singular, German plural); animate nouns can be subjects
_ANIMATE = {
    "dog": ("dogs", "hund", "hunde"), "cat": ("cats", "katze", "katzen"), "bird": ("birds", "vogel", "voegel"),
    "horse": ("horses", "pferd", "pferde"), "cow": ("cows", "kuh", "kuehe"), "fox": ("foxes", "fuchs", "fuechse"),
    "mouse": ("mice", "maus", "maeuse"), "child": ("children", "kind", "kinder"),
    "farmer": ("farmers", "bauer", "bauern"), "teacher": ("teachers", "lehrerin", "lehrerinnen"),
    "king": ("kings", "koenig", "koenige"), "boy": ("boys", "junge", "jungen"),
}  # fmt: skip
_THINGS = {
    "ball": ("balls", "kugel", "kugeln"), "book": ("books", "buch", "buecher"),
    "house": ("houses", "haus", "haeuser"), "tree": ("trees", "baum", "baeume"),
    "garden": ("gardens", "garten", "gaerten"), "river": ("rivers", "fluss", "fluesse"),
    "car": ("cars", "auto", "autos"), "apple": ("apples", "apfel", "aepfel"), "table": ("tables", "tisch", "tische"),
    "box": ("boxes", "kiste", "kisten"), "letter": ("letters", "brief", "briefe"), "cup": ("cups", "tasse", "tassen"),
}  # fmt: skip
_NOUNS = {**_ANIMATE, **_THINGS}
# verb: (third person singular, past, German stem); German forms: stem+t, stem+en, ge+stem+t
_TRANSITIVE = {
    "see": ("sees", "saw", "seh"), "like": ("likes", "liked", "lieb"), "find": ("finds", "found", "entdeck"),
    "chase": ("chases", "chased", "jag"), "carry": ("carries", "carried", "trag"),
    "watch": ("watches", "watched", "schau"), "follow": ("follows", "followed", "folg"),
    "help": ("helps", "helped", "hilf"), "want": ("wants", "wanted", "wuensch"), "hold": ("holds", "held", "fass"),
    "push": ("pushes", "pushed", "schieb"), "bring": ("brings", "brought", "bring"),
}  # fmt: skip
_INTRANSITIVE = {
    "sleep": ("sleeps", "slept", "schlaf"), "run": ("runs", "ran", "lauf"), "jump": ("jumps", "jumped", "spring"),
    "sing": ("sings", "sang", "sing"), "swim": ("swims", "swam", "schwimm"), "dance": ("dances", "danced", "tanz"),
    "laugh": ("laughs", "laughed", "lach"), "play": ("plays", "played", "spiel"),
}  # fmt: skip
_VERBS = {**_TRANSITIVE, **_INTRANSITIVE}
_PREPOSITIONS = {
    "in": "drin", "on": "auf", "under": "unter", "near": "bei", "with": "mit", "behind": "hinter",
    "across": "ueber", "from": "von",
}  # fmt: skip
_CONJUNCTIONS = {"because": "weil", "when": "wenn", "while": "waehrend", "although": "obwohl", "if": "falls"}
_OPENERS = {
    "today": "heute", "yesterday": "gestern", "then": "dann", "now": "jetzt", "later": "spaeter", "often": "oft",
}  # fmt: skip
_AUXILIARIES = {"past": ("hat", "haben"), "future": ("wird", "werden")}  # (singular, plural) subject
_TENSES = ("present", "past", "future")

# English word form -> (lemma, plural) for nouns, (lemma, form kind) for verbs
_NOUN_FORMS = {form: (noun, i == 1) for noun, forms in _NOUNS.items() for i, form in enumerate((noun, forms[0]))}
_VERB_FORMS = {
    form: (verb, kind)
    for verb, (third, past, _stem) in _VERBS.items()
    for kind, form in (("base", verb), ("third", third), ("past", past))
}


class _NP(NamedTuple):
    det: str | None
    number: str | None
    adjectives: tuple[str, ...]
    noun: str
    plural: bool


class _Clause(NamedTuple):
    subject: _NP
    verb: str
    tense: str
    obj: _NP | None
    prep: str | None
    prep_object: _NP | None


class _Sentence(NamedTuple):
    main: _Clause
    opener: str | None
    conj: str | None
    sub: _Clause | None
    sub_first: bool


# --- realisation ---------------------------------------------------------------------------------------------


def _np_source(np: _NP) -> list[str]:
    words = [w for w in (np.det, np.number) if w is not None]
    words += np.adjectives
    words.append(_NOUNS[np.noun][0] if np.plural else np.noun)
    return words


def _clause_source(c: _Clause) -> list[str]:
    third, past, _stem = _VERBS[c.verb]
    if c.tense == "present":
        verb = [c.verb if c.subject.plural else third]
    else:
        verb = [past] if c.tense == "past" else ["will", c.verb]
    words = _np_source(c.subject) + verb
    if c.obj is not None:
        words += _np_source(c.obj)
    if c.prep is not None:
        words += [c.prep, *_np_source(c.prep_object)]
    return words


def _sentence_source(s: _Sentence) -> list[str]:
    if s.sub_first:
        words = [s.conj, *_clause_source(s.sub), ",", *_clause_source(s.main)]
    else:
        words = ([s.opener] if s.opener else []) + _clause_source(s.main)
        if s.sub is not None:
            words += [",", s.conj, *_clause_source(s.sub)]
    return [*words, "."]


def _np_target(np: _NP) -> list[str]:
    words = [_DETERMINERS[np.det][np.plural]] if np.det is not None else []
    if np.number is not None:
        words.append(_NUMBERS[np.number])
    words.append(_NOUNS[np.noun][2 if np.plural else 1])
    words += [_ADJECTIVES[a] for a in reversed(np.adjectives)]
    return words


def _clause_target(c: _Clause, order: str) -> list[str]:
    """``order``: "main" (subject, finite verb, ...), "inverted" (finite verb first) or "final" (subordinate)."""
    stem = _VERBS[c.verb][2]
    plural = c.subject.plural
    if c.tense == "present":
        finite, nonfinite = stem + ("en" if plural else "t"), []
    else:
        finite = _AUXILIARIES[c.tense][plural]
        nonfinite = [f"ge{stem}t" if c.tense == "past" else f"{stem}en"]
    subject = _np_target(c.subject)
    middle = _np_target(c.obj) if c.obj is not None else []
    if c.prep is not None:
        middle += [_PREPOSITIONS[c.prep], *_np_target(c.prep_object)]
    if order == "main":
        return [*subject, finite, *middle, *nonfinite]
    if order == "inverted":
        return [finite, *subject, *middle, *nonfinite]
    return [*subject, *middle, *nonfinite, finite]


def _sentence_target(s: _Sentence) -> list[str]:
    if s.sub_first:
        words = [_CONJUNCTIONS[s.conj], *_clause_target(s.sub, "final"), ",", *_clause_target(s.main, "inverted")]
    else:
        words = [_OPENERS[s.opener]] if s.opener else []
        words += _clause_target(s.main, "inverted" if s.opener else "main")
        if s.sub is not None:
            words += [",", _CONJUNCTIONS[s.conj], *_clause_target(s.sub, "final")]
    return [*words, "."]


# --- parsing: the target is a function of the source string ----------------------------------------------------


class _Parser:
    def __init__(self, words: list[str]) -> None:
        self.words, self.i = words, 0

    def peek(self) -> str | None:
        return self.words[self.i] if self.i < len(self.words) else None

    def take(self) -> str:
        word = self.peek()
        if word is None:
            raise ValueError("the sentence ends too early")
        self.i += 1
        return word

    def fail(self, what: str) -> None:
        found = repr(self.peek()) if self.peek() is not None else "the end"
        raise ValueError(f"expected {what} at word {self.i + 1}, found {found}")

    def np(self) -> _NP:
        det = self.take() if self.peek() in _DETERMINERS else None
        number = self.take() if self.peek() in _NUMBERS else None
        if det is None and number is None:
            self.fail("a determiner or a number")
        adjectives = []
        while self.peek() in _ADJECTIVES:
            adjectives.append(self.take())
        if self.peek() not in _NOUN_FORMS:
            self.fail("a noun")
        word = self.take()
        noun, plural = _NOUN_FORMS[word]
        if det is not None and _DETERMINERS[det][plural] is None:
            raise ValueError(f"{det!r} cannot go with the {'plural' if plural else 'singular'} noun {word!r}")
        if number is not None and (not plural or (det is not None and det not in _NUMBER_DETERMINERS)):
            raise ValueError(f"{number!r} cannot go with {' '.join(w for w in (det, word) if w)!r}")
        return _NP(det, number, tuple(adjectives), noun, plural)

    def clause(self) -> _Clause:
        subject = self.np()
        if self.peek() == "will":
            self.take()
            tense, kind = "future", "base"
            if _VERB_FORMS.get(self.peek(), (None, None))[1] != "base":
                self.fail("a verb's base form after 'will'")
        elif self.peek() in _VERB_FORMS:
            kind = _VERB_FORMS[self.peek()][1]
            tense = "past" if kind == "past" else "present"
            if tense == "present" and (kind == "base") != subject.plural:
                raise ValueError(f"verb {self.peek()!r} does not agree with its subject {_np_source(subject)[-1]!r}")
        else:
            self.fail("a verb")
        verb = _VERB_FORMS[self.take()][0]
        obj = self.np() if verb in _TRANSITIVE else None
        prep = prep_object = None
        if self.peek() in _PREPOSITIONS:
            prep = self.take()
            prep_object = self.np()
        return _Clause(subject, verb, tense, obj, prep, prep_object)

    def sentence(self) -> _Sentence:
        if not self.words or self.words[-1] != ".":
            raise ValueError("a sentence ends with ' .'")
        self.words = self.words[:-1]
        opener = conj = sub = None
        sub_first = self.peek() in _CONJUNCTIONS
        if sub_first:
            conj = self.take()
            sub = self.clause()
            if self.peek() != ",":
                self.fail("','")
            self.take()
            main = self.clause()
        else:
            opener = self.take() if self.peek() in _OPENERS else None
            main = self.clause()
            if self.peek() == ",":
                self.take()
                if self.peek() not in _CONJUNCTIONS:
                    self.fail("a conjunction")
                conj = self.take()
                sub = self.clause()
        if self.peek() is not None:
            self.fail("the end of the sentence")
        return _Sentence(main, opener, conj, sub, sub_first)


def translate(source: str) -> str:
    """The reference translation of a sentence of the grammar (words separated by single spaces, ending " .").

    Generated pairs satisfy ``translate(pair["source"]) == pair["target"]``; useful to score model output.
    DataError for a sentence outside the grammar, saying where parsing stopped.
    """
    try:
        return " ".join(_sentence_target(_Parser(source.split(" ")).sentence()))
    except ValueError as e:
        raise DataError(f"not a sentence of the toy translation grammar: {e}: {source!r}") from None


def lexicon() -> dict[str, tuple[str, ...]]:
    """Every source word -> the target words it can become (several where agreement decides), for inspection."""
    out: dict[str, set[str]] = {".": {"."}, ",": {","}, "will": set(_AUXILIARIES["future"])}
    for det, forms in _DETERMINERS.items():
        out[det] = {f for f in forms if f is not None}
    for table in (_NUMBERS, _ADJECTIVES, _PREPOSITIONS, _CONJUNCTIONS, _OPENERS):
        out.update({word: {target} for word, target in table.items()})
    for noun, (plural, de_sg, de_pl) in _NOUNS.items():
        out[noun], out[plural] = {de_sg}, {de_pl}
    for verb, (third, past, stem) in _VERBS.items():
        out[verb], out[third], out[past] = {stem + "en"}, {stem + "t"}, {f"ge{stem}t"}
    return {word: tuple(sorted(targets)) for word, targets in out.items()}


def translation_vocabulary() -> tuple[set[str], set[str]]:
    """(source words, target words) the grammar can produce, punctuation included."""
    table = lexicon()
    targets = {t for forms in table.values() for t in forms}
    targets.update(a for pair in _AUXILIARIES.values() for a in pair)
    return set(table), targets


# --- sampling ------------------------------------------------------------------------------------------------

_DETS_SG = [d for d, (sg, _pl) in _DETERMINERS.items() if sg is not None] + ["the"] * 3 + ["a"] * 2
_DETS_PL = [d for d, (_sg, pl) in _DETERMINERS.items() if pl is not None] + ["the"] * 3
_DETS_NUMBER = [None, None, *sorted(_NUMBER_DETERMINERS)]
_ANIMATE_NOUNS, _THING_NOUNS, _ALL_NOUNS = list(_ANIMATE), list(_THINGS), list(_NOUNS)
_TRANSITIVE_VERBS, _INTRANSITIVE_VERBS = list(_TRANSITIVE), list(_INTRANSITIVE)
_ADJECTIVE_WORDS, _NUMBER_WORDS = list(_ADJECTIVES), list(_NUMBERS)
_PREPOSITION_WORDS, _CONJUNCTION_WORDS, _OPENER_WORDS = list(_PREPOSITIONS), list(_CONJUNCTIONS), list(_OPENERS)


def _sample_np(rng: random.Random, nouns: list[str]) -> _NP:
    plural = rng.random() < 0.4
    number = None
    if plural and rng.random() < 0.3:
        number = rng.choice(_NUMBER_WORDS)
        det = rng.choice(_DETS_NUMBER)
    else:
        det = rng.choice(_DETS_PL if plural else _DETS_SG)
    r = rng.random()
    adjectives = tuple(rng.sample(_ADJECTIVE_WORDS, 2 if r < 0.15 else 1 if r < 0.45 else 0))
    return _NP(det, number, adjectives, rng.choice(nouns), plural)


def _sample_clause(rng: random.Random) -> _Clause:
    subject = _sample_np(rng, _ANIMATE_NOUNS)
    r = rng.random()
    tense = "present" if r < 0.45 else "past" if r < 0.75 else "future"
    if rng.random() < 0.65:
        verb, obj = rng.choice(_TRANSITIVE_VERBS), _sample_np(rng, _ALL_NOUNS)
    else:
        verb, obj = rng.choice(_INTRANSITIVE_VERBS), None
    prep = prep_object = None
    if rng.random() < 0.35:
        prep, prep_object = rng.choice(_PREPOSITION_WORDS), _sample_np(rng, _THING_NOUNS)
    return _Clause(subject, verb, tense, obj, prep, prep_object)


def _sample_sentence(rng: random.Random) -> _Sentence:
    main = _sample_clause(rng)
    if rng.random() < 0.45:
        sub_first = rng.random() < 0.4
        opener = None if sub_first or rng.random() >= 0.15 else rng.choice(_OPENER_WORDS)
        return _Sentence(main, opener, rng.choice(_CONJUNCTION_WORDS), _sample_clause(rng), sub_first)
    opener = rng.choice(_OPENER_WORDS) if rng.random() < 0.2 else None
    return _Sentence(main, opener, None, None, False)


def _pairs(num_pairs: int, seed: int, exclude: set[str] | frozenset[str] = frozenset()) -> list[dict[str, str]]:
    """``num_pairs`` pairs with distinct sources, none of them in ``exclude``."""
    rng = random.Random(seed)
    seen = set(exclude)
    pairs: list[dict[str, str]] = []
    while len(pairs) < num_pairs:
        sentence = _sample_sentence(rng)
        words = _sentence_source(sentence)
        source = " ".join(words)
        if not MIN_SOURCE_LEN <= len(words) <= MAX_SOURCE_LEN or source in seen:
            continue
        seen.add(source)
        pairs.append({"source": source, "target": " ".join(_sentence_target(sentence))})
    return pairs


def generate_translation_pairs(num_pairs: int, seed: int = 0) -> list[dict[str, str]]:
    """``num_pairs`` deterministic ``{"source", "target"}`` pairs with distinct sources of 5-25 tokens."""
    if num_pairs < 0:
        raise ConfigError(f"num_pairs must be >= 0, got {num_pairs}")
    return _pairs(num_pairs, seed)


def write_embedded_translation(
    directory: str | Path, num_train: int = 20000, num_val: int = 1000, num_test: int = 1000, seed: int = 0
) -> dict[str, Path]:
    """Write train/validation/test.jsonl (fields source, target) unless identical ones exist; return their paths.

    Each split has its own seed and shares no source sentence with the others. Reused files keep their
    modification times, so the datasets cache built from them stays valid.
    """
    sizes = {"train": num_train, "validation": num_val, "test": num_test}
    meta = {"kind": "translation", "version": TRANSLATION_VERSION, "seed": seed}
    return write_disjoint_splits(directory, sizes, meta, _pairs, "source")
