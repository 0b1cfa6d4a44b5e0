import itertools
import json
import math
import time
from collections import Counter

from attnfit.data.synthetic import _TOPIC_TABLES, generate_lm_corpus, vocabulary, write_embedded_corpus


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
