import pytest
from tokenizers import Tokenizer

from attnfit.data import tokenizer as tokmod
from attnfit.data.synthetic import generate_lm_corpus
from attnfit.data.tokenizer import (
    SPECIAL_TOKENS,
    UNK_ID,
    get_tokenizer,
    load_tokenizer,
    special_token_id,
    special_token_ids,
    tokenizer_fingerprint,
    train_tokenizer,
)
from attnfit.errors import ConfigError, DataError

CJK = "我爱北京天安门。"
CORPUS = generate_lm_corpus(200, seed=0) + [CJK, "tabs\tand\nnewlines  double", "Ünïcödé café naïve"] * 2


@pytest.fixture(scope="module")
def toks():
    return {kind: train_tokenizer(kind, CORPUS, vocab_size=600) for kind in ("bpe", "wordpiece", "word", "char")}


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "word", "char"])
def test_special_tokens_fixed_and_no_post_processor(toks, kind):
    tok = toks[kind]
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(7))
    roles = ["pad", "unk", "bos", "eos", "mask", "sep", "cls"]
    assert special_token_ids(tok) == dict(zip(roles, range(7), strict=True))
    assert 7 < tok.get_vocab_size() <= 600
    ids = tok.encode("the dancer sings .", add_special_tokens=True).ids
    assert not set(ids) & set(range(7))  # no automatic bos/eos, nothing unknown


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_exact_round_trip(toks, kind):
    tok = toks[kind]
    for text in [CJK, "the small dogs that the cat sees run .", "tabs\tand\nnewlines  double", " café "]:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert UNK_ID not in ids
        assert tok.decode(ids) == text


def test_bpe_round_trips_unseen_text(toks):
    text = "Ω≈ç√ 🙂🚀 \x00\r\n 東京 ½"
    assert toks["bpe"].decode(toks["bpe"].encode(text).ids) == text


def test_wordpiece_cjk_known_and_decode_spacing(toks):
    tok = toks["wordpiece"]
    enc = tok.encode(CJK, add_special_tokens=False)
    assert UNK_ID not in enc.ids and len(enc.ids) == len(CJK)
    assert tok.decode(enc.ids).replace(" ", "") == CJK
    ids = tok.encode("the dogs that the cat sees run .").ids
    assert UNK_ID not in ids and tok.decode(ids).replace(" ", "") == "thedogsthatthecatseesrun."


def test_word_keeps_the_most_frequent_words_and_splits_punctuation():
    corpus = ["the cat sat, the cat ran.", "the dog sat!", "a rare-word"]
    tok = train_tokenizer("word", corpus, vocab_size=100, min_frequency=2)
    assert set(tok.get_vocab()) == {*SPECIAL_TOKENS, "the", "cat", "sat"}  # the rest was seen once
    assert tok.encode("The cat sat, a dog!").tokens == ["<unk>", "cat", "sat", "<unk>", "<unk>", "<unk>", "<unk>"]
    assert set(train_tokenizer("word", corpus, vocab_size=8).get_vocab()) == {*SPECIAL_TOKENS, "the"}  # most frequent
    lower = train_tokenizer("word", corpus, vocab_size=100, min_frequency=1, lowercase=True)
    enc = lower.encode("The cat sat, a rare-word!")
    assert enc.tokens == ["the", "cat", "sat", ",", "a", "rare", "-", "word", "!"]
    assert lower.decode(enc.ids) == "the cat sat, a rare - word!"
    assert lower.encode("the zebra").ids[1] == UNK_ID


def test_char_one_token_per_char_and_unk(toks):
    tok = toks["char"]
    assert tok.encode("dog").tokens == ["d", "o", "g"]
    assert tok.encode("d☃g").ids[1] == UNK_ID


def test_char_vocab_limit_keeps_most_frequent():
    tok = train_tokenizer("char", ["aaaa bbb cc d"], vocab_size=10)
    assert tok.get_vocab_size() == 10
    a, b, space = (tok.token_to_id(c) for c in "ab ")
    assert tok.encode("a b c").ids == [a, space, b, space, UNK_ID]  # c (2x) and d (1x) did not fit


def test_bad_kind_and_vocab_size():
    with pytest.raises(ConfigError, match="'bytes'.*bpe, char, word, wordpiece"):
        train_tokenizer("bytes", ["x"])
    with pytest.raises(ConfigError, match="263"):
        train_tokenizer("bpe", ["x"], vocab_size=100)
    with pytest.raises(ConfigError, match="vocab_size"):
        train_tokenizer("char", ["x"], vocab_size=5)


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(DataError, match="missing.json"):
        load_tokenizer(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        load_tokenizer(bad)


def test_save_load_keeps_fingerprint_and_behaviour(toks, tmp_path):
    for kind, tok in toks.items():
        tok.save(str(tmp_path / f"{kind}.json"))
        loaded = load_tokenizer(tmp_path / f"{kind}.json")
        assert tokenizer_fingerprint(loaded) == tokenizer_fingerprint(tok)
        assert loaded.encode("x <eos> y").ids == tok.encode("x <eos> y").ids
        assert Tokenizer.from_str(tok.to_str()).encode("x <eos> y").ids == tok.encode("x <eos> y").ids
    assert len({tokenizer_fingerprint(t) for t in toks.values()}) == len(toks)


def test_get_tokenizer_caches(tmp_path, monkeypatch):
    calls = []

    def texts_fn():
        calls.append(1)
        return CORPUS

    first = get_tokenizer("char", texts_fn, 100, cache_key="corpus-v1", cache_dir=tmp_path)
    assert len(calls) == 1 and len(list((tmp_path / "tokenizers").glob("*.json"))) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("should have loaded the cached tokenizer")

    monkeypatch.setattr(tokmod, "train_tokenizer", no_training)
    second = get_tokenizer("char", texts_fn, 100, cache_key="corpus-v1", cache_dir=tmp_path)
    assert len(calls) == 1 and second.to_str() == first.to_str()
    assert tokenizer_fingerprint(second) == tokenizer_fingerprint(first)

    monkeypatch.undo()
    get_tokenizer("char", texts_fn, 50, cache_key="corpus-v1", cache_dir=tmp_path)  # other vocab size: retrain
    get_tokenizer("char", texts_fn, 100, cache_key="corpus-v2", cache_dir=tmp_path)  # other corpus: retrain
    assert len(calls) == 3 and len(list((tmp_path / "tokenizers").glob("*.json"))) == 3
    get_tokenizer("char", texts_fn, 100, cache_key="corpus-v1", cache_dir=None)  # no cache dir: always train
    assert len(calls) == 4


def test_get_tokenizer_path_and_pretrained(toks, tmp_path):
    path = tmp_path / "tok.json"
    toks["bpe"].save(str(path))
    tok = get_tokenizer("pretrained", lambda: pytest.fail("no training"), 0, "", tmp_path, path=str(path))
    assert tokenizer_fingerprint(tok) == tokenizer_fingerprint(toks["bpe"])
    with pytest.raises(ConfigError, match="path"):
        get_tokenizer("pretrained", lambda: [], 100, "", tmp_path)
    with pytest.raises(ConfigError, match="'bp'.*did you mean 'bpe'"):
        get_tokenizer("bp", lambda: [], 100, "", tmp_path)


def test_special_token_id_missing_role():
    from tokenizers import Tokenizer, models

    bare = Tokenizer(models.WordLevel(vocab={"a": 0, "[PAD]": 1}, unk_token="a"))
    assert special_token_id(bare, "pad") == 1
    with pytest.raises(DataError, match="no eos token"):
        special_token_id(bare, "eos")


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "word", "char"])
def test_lowercase_tokenizer_shares_ids_across_case(kind, tmp_path):
    cased = ["The Cat Sat ON the mat", "A Dog RAN"] * 40
    tok = train_tokenizer(kind, cased, vocab_size=400, lowercase=True)
    assert tok.encode("THE CAT ran").ids == tok.encode("the cat ran").ids
    learned = [t for t in tok.get_vocab() if t not in SPECIAL_TOKENS and (kind != "bpe" or len(t) > 1)]  # bpe: bytes
    assert learned and not any(any("A" <= c <= "Z" for c in t) for t in learned)  # ("Ġ" is upper case)
    plain = train_tokenizer(kind, cased, vocab_size=400)
    assert plain.encode("THE CAT").ids != plain.encode("the cat").ids
    # the flag is part of the cache key: a cased and a lowercased tokenizer of one corpus are both kept
    lower = get_tokenizer(kind, lambda: cased, 400, cache_key="c", cache_dir=tmp_path, lowercase=True)
    same = get_tokenizer(kind, lambda: cased, 400, cache_key="c", cache_dir=tmp_path)
    assert lower.encode("THE").ids == lower.encode("the").ids and same.encode("THE").ids != same.encode("the").ids


def test_bpe_word_and_char_training_is_reproducible_across_processes():
    """Two processes train the same vocabulary, ids included, for bpe, word and char: the recipes' "same tokenizer,
    same file hash" rests on it. WordPiece's trainer numbers its ## pieces in hash-map order, which differs per
    process, and the ids break ties between merges (huggingface/tokenizers#1794): a wordpiece vocabulary is
    reproduced by its saved tokenizer.json (the run directory's or the cache's), not by training it again."""
    import subprocess
    import sys

    script = (
        "import hashlib, json\n"
        "from attnfit.data.tokenizer import train_tokenizer\n"
        "texts = [f'the {w} saw {i} near the {w}s, said zoë' for i in range(300) for w in ('fox', 'dog', 'owl')]\n"
        "for kind in ('bpe', 'word', 'char'):\n"
        "    vocab = sorted(train_tokenizer(kind, texts, vocab_size=400).get_vocab().items())\n"
        "    print(kind, hashlib.sha256(json.dumps(vocab).encode()).hexdigest())\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in "ab"]
    first, second = (dict(line.split() for line in proc.communicate(timeout=120)[0].splitlines()) for proc in procs)
    assert all(proc.returncode == 0 for proc in procs)
    assert first.keys() == {"bpe", "word", "char"}
    assert [kind for kind in first if first[kind] != second[kind]] == []
