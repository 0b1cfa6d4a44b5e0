import hashlib
import itertools
import json
import math
import time
from collections import Counter

import pytest

from attnfit.data.synthetic import (
    _NUMBERLESS_NOUNS,
    _TOPIC_TABLES,
    generate_classification_corpus,
    generate_lm_corpus,
    vocabulary,
    write_embedded_classification,
    write_embedded_corpus,
)
from attnfit.errors import ConfigError


def test_deterministic_per_seed():
    assert generate_lm_corpus(50, seed=1) == generate_lm_corpus(50, seed=1)
    assert generate_lm_corpus(50, seed=1) != generate_lm_corpus(50, seed=2)


def test_fast():
    start = time.perf_counter()
    docs = generate_lm_corpus(20000)
    assert time.perf_counter() - start < 2.0
    assert len(docs) == 20000


def test_documents_shape_and_vocabulary():
    docs = generate_lm_corpus(500, seed=3)
    vocab = vocabulary()
    assert 200 <= len(vocab) <= 500
    for doc in docs:
        assert "\n" not in doc and doc == doc.strip()
        words = doc.split(" ")
        assert all(words) and set(words) <= vocab
        assert 3 <= words.count(".") <= 8 and words[-1] == "."


def _forms(index: int) -> tuple[set[str], set[str]]:
    """(singular, plural) word forms of table ``index`` (0 subjects, 1 objects, 2/3 verbs) over all topics."""
    sg = {pair[0] for table in _TOPIC_TABLES for pair in table[index]}
    pl = {pair[1] for table in _TOPIC_TABLES for pair in table[index]}
    return sg, pl


def test_subject_verb_agreement():
    sg_nouns, pl_nouns = _forms(1)
    sg_verbs, pl_verbs = _forms(2)
    sg_vi, pl_vi = _forms(3)
    all_nouns = sg_nouns | pl_nouns
    sg_nouns, pl_nouns = sg_nouns - pl_nouns, pl_nouns - sg_nouns  # drop number-ambiguous forms ("sheep")
    sg_verbs, pl_verbs = (sg_verbs | sg_vi) - all_nouns, (pl_verbs | pl_vi) - all_nouns
    checked = relatives = 0
    for doc in generate_lm_corpus(300, seed=5):
        for words in (sentence.split() for sentence in doc.split(" .")):
            nouns = [i for i, w in enumerate(words) if w in all_nouns]
            if not nouns or nouns[0] + 1 >= len(words) or words[nouns[0]] not in sg_nouns | pl_nouns:
                continue
            head, after = words[nouns[0]], words[nouns[0] + 1]
            relatives += after == "that"
            if after in sg_verbs | pl_verbs:  # "DET ADJ* NOUN VERB": the verb agrees with the subject
                assert (head in pl_nouns) == (after in pl_verbs), words
                checked += 1
    assert checked > 300 and relatives > 50


def _cross_entropy(train: list[list[str]], evals: list[list[str]], order: int) -> float:
    """Add-one smoothed unigram (order=1) or interpolated bigram (order=2) cross-entropy in nats/word."""
    uni = Counter(w for doc in train for w in doc)
    total, vocab = sum(uni.values()), len(uni) + 1
    big = Counter((a, b) for doc in train for a, b in itertools.pairwise(doc))
    nll, n = 0.0, 0
    for doc in evals:
        for prev, w in itertools.pairwise(["<s>", *doc]):
            p_uni = (uni[w] + 1) / (total + vocab)
            p = p_uni if order == 1 else 0.9 * big[(prev, w)] / max(uni[prev], 1) + 0.1 * p_uni
            nll -= math.log(p)
            n += 1
    return nll / n


def test_context_beats_unigram_clearly():
    train = [d.split() for d in generate_lm_corpus(2000, seed=0)]
    evals = [d.split() for d in generate_lm_corpus(200, seed=1)]
    unigram, bigram = _cross_entropy(train, evals, 1), _cross_entropy(train, evals, 2)
    assert bigram < unigram - 1.0, (unigram, bigram)


def test_write_embedded_corpus_reuses_and_regenerates(tmp_path):
    paths = write_embedded_corpus(tmp_path, num_train_docs=30, num_val_docs=5, seed=0)
    assert set(paths) == {"train", "validation"}
    train_lines = paths["train"].read_text(encoding="utf-8").splitlines()
    val_lines = paths["validation"].read_text(encoding="utf-8").splitlines()
    assert len(train_lines) == 30 and len(val_lines) == 5
    assert train_lines == generate_lm_corpus(30, seed=0)
    assert not set(val_lines) & set(train_lines)  # validation uses another seed
    assert json.loads((tmp_path / "meta.json").read_text())["num_train_docs"] == 30

    mtime = paths["train"].stat().st_mtime_ns
    assert write_embedded_corpus(tmp_path, num_train_docs=30, num_val_docs=5, seed=0) == paths
    assert paths["train"].stat().st_mtime_ns == mtime  # reused, not rewritten

    write_embedded_corpus(tmp_path, num_train_docs=40, num_val_docs=5, seed=0)
    assert len(paths["train"].read_text(encoding="utf-8").splitlines()) == 40
    assert not list(tmp_path.glob("*.tmp"))

    paths["validation"].unlink()  # a missing file triggers regeneration even if meta matches
    write_embedded_corpus(tmp_path, num_train_docs=40, num_val_docs=5, seed=0)
    assert paths["validation"].is_file()


# --- the embedded classification task -------------------------------------------------------------------------


def test_lm_corpus_is_unchanged():
    # pinned: generate_lm_corpus shares its grammar with the classification task; bump CORPUS_VERSION on purpose
    text = "\n".join(generate_lm_corpus(300, seed=0))
    assert hashlib.sha256(text.encode()).hexdigest().startswith("3e6f2314ece7586461e243ac830355dc")


def test_classification_corpus_balanced_deterministic():
    examples = generate_classification_corpus(400, seed=1)
    assert examples == generate_classification_corpus(400, seed=1)
    assert examples != generate_classification_corpus(400, seed=2)
    assert Counter(ex["label"] for ex in examples) == {"grammatical": 200, "ungrammatical": 200}
    assert Counter(ex["label"] for ex in generate_classification_corpus(7)) == {"grammatical": 4, "ungrammatical": 3}
    assert len({ex["text"] for ex in examples}) == 400  # no duplicates
    labels = [ex["label"] for ex in examples]
    assert labels[:20] != sorted(labels[:20])  # shuffled
    vocab = vocabulary()
    for ex in examples:
        assert set(ex) == {"text", "label"} and ex["text"].endswith(" .") and set(ex["text"].split(" ")) <= vocab


def _twins(examples: list[dict]) -> list[tuple[list[str], list[str], int]]:
    """(grammatical words, ungrammatical words, index of the one differing word) for every ungrammatical text."""
    grammatical = {}
    for ex in examples:
        if ex["label"] == "grammatical":
            words = ex["text"].split()
            for i in range(len(words)):
                grammatical[(*words[:i], None, *words[i + 1 :])] = words
    out = []
    for ex in examples:
        if ex["label"] == "ungrammatical":
            words = ex["text"].split()
            matches = [
                (grammatical[k], i)
                for i in range(len(words))
                if (k := (*words[:i], None, *words[i + 1 :])) in grammatical
            ]
            assert len(matches) == 1, ex
            out.append((matches[0][0], words, matches[0][1]))
    return out


def test_classification_classes_differ_only_in_agreement():
    examples = generate_classification_corpus(600, seed=3)
    twins = _twins(examples)
    assert len(twins) == 300  # every ungrammatical sentence has a grammatical twin one word apart
    sg_nouns, pl_nouns = _forms(0)
    obj_sg, obj_pl = _forms(1)
    sg_nouns, pl_nouns = (sg_nouns | obj_sg) - (pl_nouns | obj_pl), (pl_nouns | obj_pl) - (sg_nouns | obj_sg)
    sg_verbs, pl_verbs = (a | b for a, b in zip(_forms(2), _forms(3), strict=True))
    assert not sg_verbs & pl_verbs
    across = 0
    for good, bad, i in twins:
        clause = " ".join(good[:i]).replace(" but", " and").split(" and ")[-1].split()  # the flipped verb's clause
        head = next(j for j, w in enumerate(clause) if w in sg_nouns | pl_nouns | _NUMBERLESS_NOUNS)
        assert clause[head] not in _NUMBERLESS_NOUNS  # its number is visible
        plural = clause[head] in pl_nouns
        assert good[i] in (pl_verbs if plural else sg_verbs)  # agrees
        assert bad[i] in (sg_verbs if plural else pl_verbs)  # does not
        assert {good[i], bad[i]} in ({sg, pl} for t in _TOPIC_TABLES for table in t[2:4] for sg, pl in table)
        across += "that" in clause[head:]
    assert across > 0.3 * len(twins)  # relative clauses between subject and verb are preferred
    # the same words in both classes: the word multisets differ only in verb forms
    words = {label: Counter() for label in ("grammatical", "ungrammatical")}
    for ex in examples:
        words[ex["label"]].update(ex["text"].split())
    differ = (words["grammatical"] - words["ungrammatical"]) + (words["ungrammatical"] - words["grammatical"])
    assert differ and set(differ) <= sg_verbs | pl_verbs


def test_classification_needs_context_not_word_counts():
    """A unigram naive Bayes classifier is at chance: word identity cannot tell the classes apart."""
    train, test = generate_classification_corpus(2000, seed=0), generate_classification_corpus(500, seed=1)
    counts = {label: Counter() for label in ("grammatical", "ungrammatical")}
    for ex in train:
        counts[ex["label"]].update(ex["text"].split())
    totals = {label: sum(c.values()) + 1000 for label, c in counts.items()}

    def log_likelihood(words, label):
        return sum(math.log((counts[label][w] + 1) / totals[label]) for w in words)

    correct = sum(
        max(counts, key=lambda label: log_likelihood(ex["text"].split(), label)) == ex["label"] for ex in test
    )
    assert correct / len(test) < 0.58


def test_write_embedded_classification(tmp_path):
    paths = write_embedded_classification(tmp_path, num_train=40, num_val=10, num_test=11, seed=0)
    assert set(paths) == {"train", "validation", "test"}
    rows = {
        split: [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines()] for split, p in paths.items()
    }
    assert [len(r) for r in rows.values()] == [40, 10, 11]
    assert rows["train"] == generate_classification_corpus(40, seed=0)
    texts = {split: {r["text"] for r in split_rows} for split, split_rows in rows.items()}
    assert not texts["train"] & texts["validation"] and not texts["train"] & texts["test"]
    assert not texts["validation"] & texts["test"]
    assert json.loads((tmp_path / "meta.json").read_text())["num_test"] == 11

    mtime = paths["test"].stat().st_mtime_ns
    assert write_embedded_classification(tmp_path, num_train=40, num_val=10, num_test=11) == paths
    assert paths["test"].stat().st_mtime_ns == mtime  # reused
    write_embedded_classification(tmp_path, num_train=40, num_val=10, num_test=12)
    assert len(paths["test"].read_text(encoding="utf-8").splitlines()) == 12
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(ConfigError, match="validation split needs at least 2"):
        write_embedded_classification(tmp_path, num_val=0)
