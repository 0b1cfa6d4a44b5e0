import gzip
import json
import logging
import tempfile
from collections import defaultdict
from pathlib import Path

import datasets
import pandas as pd
import pytest
import torch
from datasets import Dataset, DatasetDict, Features, Translation
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from attnfit.data import seq2seq
from attnfit.data.lm import IGNORE_INDEX
from attnfit.data.seq2seq import Seq2SeqCollator, load_parallel_splits, parallel_texts, tokenize_for_seq2seq
from attnfit.data.synthetic_seq2seq import (
    MAX_SOURCE_LEN,
    MIN_SOURCE_LEN,
    generate_translation_pairs,
    lexicon,
    translate,
    translation_vocabulary,
    write_embedded_translation,
)
from attnfit.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, train_tokenizer
from attnfit.errors import ConfigError, DataError

DE = [f"der hund {i} schlaft ." for i in range(30)]
EN = [f"the dog {i} sleeps ." for i in range(30)]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _pairs(ds: Dataset) -> list[tuple[str, str]]:
    return list(zip(ds["source"][:], ds["target"][:], strict=True))


def _load(tmp_path, **kwargs):
    kwargs.setdefault("cache_dir", tmp_path / "cache")
    return load_parallel_splits("files", **kwargs)


# --- the embedded grammar ------------------------------------------------------------------------------------

PAIRS = generate_translation_pairs(2000, seed=3)


def test_generator_is_deterministic_per_seed():
    assert generate_translation_pairs(50, seed=3) == PAIRS[:50]
    assert generate_translation_pairs(50, seed=4) != PAIRS[:50]


def test_shape_vocabulary_and_lengths():
    source_vocab, target_vocab = translation_vocabulary()
    assert 100 <= len(source_vocab) <= 200 and 100 <= len(target_vocab) <= 200
    assert source_vocab & target_vocab == {".", ","}  # a model must learn the lexicon, not copy
    sources = [p["source"] for p in PAIRS]
    assert len(set(sources)) == len(sources)
    for pair in PAIRS:
        src, tgt = pair["source"].split(" "), pair["target"].split(" ")
        assert MIN_SOURCE_LEN <= len(src) <= MAX_SOURCE_LEN and src[-1] == tgt[-1] == "."
        assert set(src) <= source_vocab and set(tgt) <= target_vocab
    lengths = [len(s.split(" ")) for s in sources]
    assert 10 < sum(lengths) / len(lengths) < 15 and max(lengths) == MAX_SOURCE_LEN


def test_target_is_a_function_of_the_source():
    for pair in PAIRS:
        assert translate(pair["source"]) == pair["target"]
    targets = defaultdict(set)  # sources that recur across seeds get the same target every time
    for seed in range(6):
        for pair in generate_translation_pairs(3000, seed=seed):
            targets[pair["source"]].add(pair["target"])
    assert len(targets) < 6 * 3000  # some recur
    assert all(len(t) == 1 for t in targets.values())


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("the two children play .", "die zwei kinder spielen ."),
        ("a child plays .", "ein kind spielt ."),
        (  # adjectives after the noun, mirrored; future: infinitive to the end; opener: verb before subject
            "today the big red dog will chase the cats in the garden .",
            "heute wird der hund rot gross die katzen drin der garten jagen .",
        ),
        (  # fronted subordinate clause: verb-final there, inversion in the main clause; inserted auxiliary
            "because the dogs saw a cat , the king sleeps .",
            "weil die hunde ein katze geseht haben , schlaft der koenig .",
        ),
        (
            "my cows like no apples , although the boy laughed .",
            "meine kuehe lieben keine aepfel , obwohl der junge gelacht hat .",
        ),
    ],
)
def test_reference_translations(source, target):
    assert translate(source) == target


@pytest.mark.parametrize(
    ("source", "where"),
    [
        ("the dogs sleeps .", "does not agree"),
        ("a dogs sleep .", "'a' cannot go with the plural"),
        ("many two dogs sleep .", "'two' cannot go"),
        ("the dog sleeps", "ends with"),
        ("the dog will sleeps .", "base form"),
        ("the dog sees .", "word 4"),
        ("the dog sleeps the cat .", "end of the sentence"),
    ],
)
def test_translate_rejects_sentences_outside_the_grammar(source, where):
    with pytest.raises(DataError, match=where):
        translate(source)


def _alignment(source: str, target: str) -> list[int]:
    """Source position of each target word, matched left to right to the first unused source word that can
    become it (inserted auxiliaries have none)."""
    table = lexicon()
    src = source.split(" ")
    used: set[int] = set()
    positions = []
    for word in target.split(" "):
        i = next((i for i, w in enumerate(src) if i not in used and word in table[w]), None)
        if i is None:
            assert word in ("hat", "haben"), (word, source, target)
            continue
        used.add(i)
        positions.append(i)
    assert sorted(positions) == list(range(len(src)))  # every source word is translated exactly once
    return positions


def test_grammar_reorders():
    """The target is a permutation of a word-by-word translation (plus auxiliaries), mostly not a monotone one."""
    reordered = sum(_alignment(p["source"], p["target"]) != sorted(_alignment(p["source"], p["target"])) for p in PAIRS)
    assert reordered > 0.7 * len(PAIRS)
    monotone = "the dog sees the cat ."
    assert _alignment(monotone, translate(monotone)) == [0, 1, 2, 3, 4, 5]


def test_write_embedded_translation(tmp_path):
    paths = write_embedded_translation(tmp_path, num_train=300, num_val=50, num_test=40, seed=1)
    rows = {
        split: [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines()] for split, p in paths.items()
    }
    assert {split: len(r) for split, r in rows.items()} == {"train": 300, "validation": 50, "test": 40}
    assert rows["train"] == generate_translation_pairs(300, seed=1)
    sources = [{r["source"] for r in split_rows} for split_rows in rows.values()]
    assert sum(map(len, sources)) == len(set.union(*sources))  # no sentence in two splits
    mtime = paths["train"].stat().st_mtime_ns
    assert write_embedded_translation(tmp_path, num_train=300, num_val=50, num_test=40, seed=1) == paths
    assert paths["train"].stat().st_mtime_ns == mtime  # reused, not rewritten
    write_embedded_translation(tmp_path, num_train=300, num_val=50, num_test=12, seed=1)
    assert len(paths["test"].read_text(encoding="utf-8").splitlines()) == 12
    with pytest.raises(ConfigError, match="validation"):
        write_embedded_translation(tmp_path, num_val=0)


def test_load_embedded(tmp_path):
    splits = load_parallel_splits("embedded", cache_dir=tmp_path, num_train=200, num_val=20, num_test=30)
    assert (tmp_path / "embedded-translation" / "train.jsonl").is_file()
    assert {k: len(v) for k, v in splits.items()} == {"train": 200, "validation": 20, "test": 30}
    assert all(ds.column_names == ["source", "target"] for ds in splits.values())
    with pytest.raises(ConfigError, match="data.train"):
        load_parallel_splits("embedded", cache_dir=tmp_path, train="x.jsonl")


# --- loading files -------------------------------------------------------------------------------------------


def test_parallel_text_files_dict_and_list_with_gzip(tmp_path):
    _write(tmp_path / "train.de", DE[:20])
    with gzip.open(tmp_path / "train.en.gz", "wt", encoding="utf-8") as f:
        f.write("\r\n".join(EN[:20]))  # CRLF, no final newline
    _write(tmp_path / "val.de", DE[20:25])
    _write(tmp_path / "val.en", EN[20:25])
    _write(tmp_path / "test.de", DE[25:])
    _write(tmp_path / "test.en", EN[25:])
    splits = _load(
        tmp_path,
        train={"source": tmp_path / "train.de", "target": str(tmp_path / "train.en.gz")},
        validation=[tmp_path / "val.de", tmp_path / "val.en"],
        test=(str(tmp_path / "test.de"), str(tmp_path / "test.en")),
    )
    assert isinstance(splits, DatasetDict) and set(splits) == {"train", "validation", "test"}
    assert all(ds.column_names == ["source", "target"] for ds in splits.values())
    assert _pairs(splits["train"]) == list(zip(DE[:20], EN[:20], strict=True))
    assert _pairs(splits["validation"]) == list(zip(DE[20:25], EN[20:25], strict=True))
    assert _pairs(splits["test"]) == list(zip(DE[25:], EN[25:], strict=True))


def test_mismatched_line_counts(tmp_path):
    _write(tmp_path / "a.de", DE[:10])
    _write(tmp_path / "a.en", EN[:9])
    with pytest.raises(DataError, match=r"'.*a\.de' has 10 lines, '.*a\.en' has 9 lines"):
        _load(tmp_path, train=[tmp_path / "a.de", tmp_path / "a.en"])
    (tmp_path / "empty.en.gz").write_bytes(gzip.compress(b""))  # not an empty file, but no lines
    with pytest.raises(DataError, match=r"empty\.en\.gz' \(split 'train'\) has no lines"):
        _load(tmp_path, train=[tmp_path / "a.de", tmp_path / "empty.en.gz"])


def test_blank_lines_drop_the_pair_with_a_warning(tmp_path, caplog):
    _write(tmp_path / "a.src", [DE[0], "", DE[2], "  ", "", DE[5]])
    _write(tmp_path / "a.tgt", [EN[0], EN[1], "\t", EN[3], "", EN[5]])
    with caplog.at_level(logging.WARNING, logger="attnfit"):
        splits = _load(tmp_path, train=[tmp_path / "a.src", tmp_path / "a.tgt"], val_fraction=0.5)
    assert sorted(_pairs(splits["train"]) + _pairs(splits["validation"])) == [(DE[0], EN[0]), (DE[5], EN[5])]
    assert "dropped 4 of 6 pairs in split 'train'" in caplog.text and "a.src" in caplog.text
    _write(tmp_path / "b.src", ["", " "])
    _write(tmp_path / "b.tgt", ["x", "y"])
    with pytest.raises(DataError, match="'validation'.*no non-blank"):
        _load(
            tmp_path,
            train=[tmp_path / "a.src", tmp_path / "a.tgt"],
            validation=[tmp_path / "b.src", tmp_path / "b.tgt"],
        )


def test_tsv_and_jsonl_columns_and_split_off(tmp_path):
    pd.DataFrame({"id": range(30), "de": DE, "en": EN}).to_csv(tmp_path / "a.tsv", sep="\t", index=False)
    splits = _load(tmp_path, train=tmp_path / "a.tsv", source_column="de", target_column="en", val_fraction=0.1)
    assert len(splits["validation"]) == 3
    assert sorted(_pairs(splits["train"]) + _pairs(splits["validation"])) == sorted(zip(DE, EN, strict=True))
    for i, rows in enumerate((range(0, 15), range(15, 30))):  # two jsonl shards: a table, not a pair
        lines = [json.dumps({"document": EN[j], "summary": DE[j], "n": j}) for j in rows]
        _write(tmp_path / f"s{i}.jsonl", lines)
    splits = _load(
        tmp_path,
        train=[tmp_path / "s0.jsonl", tmp_path / "s1.jsonl"],
        validation=tmp_path / "s1.jsonl",
        source_column="document",
        target_column="summary",
    )
    assert _pairs(splits["train"]) == list(zip(EN, DE, strict=True))
    pd.DataFrame({"a": EN, "b": DE}).to_csv(tmp_path / "noheader.tsv", sep="\t", index=False, header=False)
    splits = _load(tmp_path, train=tmp_path / "noheader.tsv", column_names=["src", "tgt"], source_column="src",
                   target_column="tgt")  # fmt: skip
    assert len(splits["train"]) + len(splits["validation"]) == 30


def test_missing_column_names_the_available_ones(tmp_path):
    pd.DataFrame({"de": DE, "en": EN}).to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(DataError, match="target column 'tgt' not found.*available columns: de, en"):
        _load(tmp_path, train=tmp_path / "a.csv", source_column="de", target_column="tgt")


def test_translation_records(tmp_path):
    lines = [
        json.dumps({"id": i, "translation": {"de": d, "en": e}}) for i, (d, e) in enumerate(zip(DE, EN, strict=True))
    ]
    _write(tmp_path / "t.jsonl", lines)
    splits = _load(tmp_path, train=tmp_path / "t.jsonl", source_lang="en", target_lang="de")
    assert all(ds.column_names == ["source", "target"] for ds in splits.values())
    assert sorted(_pairs(splits["train"]) + _pairs(splits["validation"])) == sorted(zip(EN, DE, strict=True))
    with pytest.raises(DataError, match="language 'fr'.*available languages: de, en"):
        _load(tmp_path, train=tmp_path / "t.jsonl", source_lang="fr", target_lang="de")
    pd.DataFrame({"de": DE, "en": EN}).to_parquet(tmp_path / "t.parquet")  # one column per language
    splits = _load(tmp_path, train=tmp_path / "t.parquet", source_lang="de", target_lang="en")
    assert sorted(_pairs(splits["train"]) + _pairs(splits["validation"])) == sorted(zip(DE, EN, strict=True))
    with pytest.raises(ConfigError, match="both"):
        _load(tmp_path, train=tmp_path / "t.jsonl", source_lang="en")


def test_non_utf8_names_the_file(tmp_path):
    _write(tmp_path / "ok.en", EN[:3])
    (tmp_path / "bad.de").write_bytes(b"der hund\n" + "gr\xfc\xdfe\n".encode("latin-1") + b"x\n")
    with pytest.raises(DataError, match=r"bad\.de.*UnicodeDecodeError"):
        _load(tmp_path, train={"source": tmp_path / "bad.de", "target": tmp_path / "ok.en"})
    (tmp_path / "bad.csv").write_bytes(b"source,target\n" + "gr\xfc\xdfe,hi\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"bad\.csv"):
        _load(tmp_path, train=tmp_path / "bad.csv")


def test_config_errors(tmp_path):
    _write(tmp_path / "one.txt", EN)
    with pytest.raises(ConfigError, match="plain text, which holds one side only"):
        _load(tmp_path, train=tmp_path / "one.txt")
    with pytest.raises(ConfigError, match="needs data.train"):
        _load(tmp_path, validation=[tmp_path / "one.txt", tmp_path / "one.txt"])
    with pytest.raises(ConfigError, match="keys 'source' and 'target'"):
        _load(tmp_path, train={"src": tmp_path / "one.txt", "target": tmp_path / "one.txt"})
    with pytest.raises(ConfigError, match="same column"):
        _load(tmp_path, train=tmp_path / "x.csv", source_column="a", target_column="a")
    with pytest.raises(DataError, match="nope.de"):
        _load(tmp_path, train=[tmp_path / "nope.de", tmp_path / "one.txt"])
    with pytest.raises(ConfigError, match="'file'"):
        load_parallel_splits("file")


# --- hub (monkeypatched, offline) ----------------------------------------------------------------------------


def _fake_hub(monkeypatch, splits: dict[str, Dataset]) -> list:
    calls = []

    def fake_load_dataset(path, name=None, **kwargs):
        calls.append((path, name))
        return DatasetDict(splits)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    return calls


def test_hub_translation(monkeypatch, tmp_path):
    features = Features({"translation": Translation(languages=["de", "en"])})

    def records(lo, hi):
        return Dataset.from_dict(
            {"translation": [{"de": d, "en": e} for d, e in zip(DE[lo:hi], EN[lo:hi], strict=True)]}, features=features
        )

    calls = _fake_hub(monkeypatch, {"train": records(0, 20), "validation": records(20, 25), "test": records(25, 30)})
    splits = load_parallel_splits(
        "hub",
        path="wmt16",
        subset="de-en",
        source_lang="de",
        target_lang="en",
        hub_splits={"test": "test"},
        cache_dir=tmp_path,
    )
    assert calls == [("wmt16", "de-en")]
    assert _pairs(splits["train"]) == list(zip(DE[:20], EN[:20], strict=True))
    assert _pairs(splits["test"]) == list(zip(DE[25:], EN[25:], strict=True))
    with pytest.raises(DataError, match="language 'fr'.*available languages: de, en"):
        load_parallel_splits("hub", path="wmt16", subset="de-en", source_lang="fr", target_lang="en")


def test_hub_summarization_splits_off_validation(monkeypatch):
    docs = [f"article {i} : {EN[i]} {EN[i]}" for i in range(30)]
    _fake_hub(monkeypatch, {"train": Dataset.from_dict({"article": docs, "highlights": EN, "id": list(range(30))})})
    splits = load_parallel_splits(
        "hub", path="cnn_dailymail", subset="3.0.0", source_column="article", target_column="highlights"
    )
    assert set(splits) == {"train", "validation"} and len(splits["validation"]) == 2
    assert sorted(_pairs(splits["train"]) + _pairs(splits["validation"])) == sorted(zip(docs, EN, strict=True))
    with pytest.raises(DataError, match="available columns: article, highlights, id"):
        load_parallel_splits("hub", path="cnn_dailymail")


def test_hub_load_errors_become_data_errors(monkeypatch):
    def fake_load_dataset(path, name=None, **kwargs):
        raise ValueError("Config name is missing. Please pick one among the available configs: ['de-en', 'cs-en']")

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    with pytest.raises(DataError, match="'wmt16'.*Config name is missing"):
        load_parallel_splits("hub", path="wmt16", source_lang="de", target_lang="en")


# --- tokenization and collation ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok():
    """A joint character tokenizer: both sides, as parallel_texts yields them."""
    texts = list(parallel_texts(Dataset.from_dict({"source": DE, "target": EN})))
    assert texts == DE + EN
    return train_tokenizer("char", texts, vocab_size=100)


@pytest.fixture()
def splits(tmp_path):
    _write(tmp_path / "train.de", DE[:24])
    _write(tmp_path / "train.en", EN[:24])
    _write(tmp_path / "val.de", DE[24:])
    _write(tmp_path / "val.en", EN[24:])
    return _load(
        tmp_path,
        train=[tmp_path / "train.de", tmp_path / "train.en"],
        validation=[tmp_path / "val.de", tmp_path / "val.en"],
    )


def test_parallel_texts_sides(splits):
    assert list(parallel_texts(splits["validation"], "source")) == DE[24:]
    assert list(parallel_texts(splits["validation"], "target", batch_size=4)) == EN[24:]
    with pytest.raises(ConfigError, match="'sources'"):
        next(parallel_texts(splits["validation"], "sources"))


def test_tokenize_places_bos_and_eos(splits, tok):
    target_tok = train_tokenizer("char", EN, vocab_size=60)  # separate vocabularies
    out = tokenize_for_seq2seq(splits["validation"], tok, target_tok, max_source_len=64, max_target_len=64)
    assert out.column_names == ["source_ids", "target_ids", "index"]
    assert out.features["source_ids"].feature.dtype == "int32" and out.features["target_ids"].feature.dtype == "int32"
    for i, row in enumerate(out):
        assert row["index"] == i
        assert row["source_ids"] == [*tok.encode(DE[24 + i], add_special_tokens=False).ids, EOS_ID]
        assert row["target_ids"] == [BOS_ID, *target_tok.encode(EN[24 + i], add_special_tokens=False).ids, EOS_ID]


def test_truncation_counted_and_warned_once(splits, tok, caplog):
    with caplog.at_level(logging.WARNING, logger="attnfit"):
        out = tokenize_for_seq2seq(
            splits["validation"], tok, tok, max_source_len=16, max_target_len=30, split="validation"
        )
    assert all(len(r) == 16 and r[-1] == EOS_ID for r in out["source_ids"])
    assert all(
        len(r) == len(e) + 2 and r[0] == BOS_ID and r[-1] == EOS_ID
        for r, e in zip(out["target_ids"], EN[24:], strict=True)
    )
    records = [r for r in caplog.records if "truncated" in r.getMessage()]
    assert len(records) == 1
    assert (
        "6 of 6 pairs in split 'validation' were truncated (6 sources longer than max_source_len=16, 0 targets"
        in records[0].getMessage()
    )
    with pytest.raises(ConfigError, match="max_target_len"):
        tokenize_for_seq2seq(splits["validation"], tok, tok, max_source_len=16, max_target_len=2)


def test_second_run_loads_from_cache(splits, tok, monkeypatch):
    first = tokenize_for_seq2seq(splits["train"], tok, tok, 32, 32)
    monkeypatch.setattr(
        seq2seq, "_tokenize_batch", lambda *a, **k: pytest.fail("tokenized again instead of loading the cache")
    )
    second = tokenize_for_seq2seq(splits["train"], tok, tok, 32, 32)
    assert second.cache_files == first.cache_files and second["target_ids"][:] == first["target_ids"][:]
    with pytest.raises(pytest.fail.Exception, match="tokenized again"):  # other settings are not taken from the cache
        tokenize_for_seq2seq(splits["train"], tok, tok, 32, 33)


def test_collator():
    examples = [
        {"source_ids": [10, 11, 12, EOS_ID], "target_ids": [BOS_ID, 20, 21, EOS_ID], "index": 7},
        {"source_ids": torch.tensor([13, EOS_ID]), "target_ids": [BOS_ID, 22, 23, 24, 25, EOS_ID], "index": 2},
    ]
    batch = Seq2SeqCollator(pad_id=PAD_ID)(examples)
    assert batch["source_ids"].tolist() == [[10, 11, 12, EOS_ID], [13, EOS_ID, PAD_ID, PAD_ID]]
    assert batch["source_padding_mask"].tolist() == [[False] * 4, [False, False, True, True]]
    assert batch["target_in"].tolist() == [[BOS_ID, 20, 21, PAD_ID, PAD_ID], [BOS_ID, 22, 23, 24, 25]]
    assert batch["labels"].tolist() == [[20, 21, EOS_ID, IGNORE_INDEX, IGNORE_INDEX], [22, 23, 24, 25, EOS_ID]]
    assert batch["target_padding_mask"].tolist() == [[False] * 3 + [True] * 2, [False] * 5]
    assert int(batch["num_target_tokens"]) == 8 and batch["index"].tolist() == [7, 2]
    assert all(batch[k].dtype == torch.long for k in ("source_ids", "target_in", "labels"))
    assert batch["source_padding_mask"].dtype == torch.bool
    with pytest.raises(DataError, match="at least 2"):
        Seq2SeqCollator(PAD_ID)([{"source_ids": [5], "target_ids": [BOS_ID]}])


def test_tokenized_embedded_batches(tmp_path, tok):
    splits = load_parallel_splits("embedded", cache_dir=tmp_path, num_train=40, num_val=8, num_test=8)
    joint = train_tokenizer("char", parallel_texts(splits["train"]), vocab_size=100)
    out = tokenize_for_seq2seq(splits["validation"], joint, joint, 200, 200).with_format("torch")
    batch = Seq2SeqCollator(PAD_ID)([out[i] for i in range(len(out))])
    assert batch["source_ids"].shape[0] == 8 and batch["labels"].shape == batch["target_in"].shape
    assert (batch["labels"] != IGNORE_INDEX).sum() == batch["num_target_tokens"]
    assert joint.decode(out[0]["target_ids"][1:-1].tolist()) == splits["validation"][0]["target"]


# --- property: malformed parallel inputs load or fail with our errors ---------------------------------------

LINE = st.one_of(
    st.text(st.sampled_from("ab ,.\"'"), min_size=1, max_size=10),  # mostly plain sentences
    st.text(st.sampled_from("ab ,.\"'"), min_size=1, max_size=10),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=12),  # any code point: tabs, \r, \u2028, NUL
    st.sampled_from(["", " ", "\t"]),
)
SPLIT = st.tuples(
    st.lists(st.tuples(LINE, LINE), max_size=6),  # aligned pairs
    st.lists(LINE, max_size=2),  # extra source lines: mismatched files, or rows without a target
)
BAD_BYTES = st.one_of(st.none(), st.none(), st.sampled_from([b"\xff\xfe\n", b"\x00\n", b"\xc3(\n"]))


def _write_split(root: Path, split: str, fmt: str, pairs: list, extra: list[str], raw: bytes | None) -> object:
    src, tgt = [s for s, _ in pairs] + extra, [t for _, t in pairs]
    if fmt in ("pair", "pair.gz"):
        paths = [root / f"{split}.src", root / f"{split}.tgt{'.gz' if fmt == 'pair.gz' else ''}"]
        for path, lines in zip(paths, (src, tgt), strict=True):
            data = "\n".join(lines).encode("utf-8")
            path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
        paths[0].write_bytes(paths[0].read_bytes() + (raw or b""))
        return {"source": str(paths[0]), "target": str(paths[1])}
    path = root / f"{split}.{fmt}"
    if fmt == "jsonl":
        rows = [{"source": s, "target": t} for s, t in pairs] + [{"source": s} for s in extra]
        path.write_text("\n".join(map(json.dumps, rows)), encoding="utf-8")
    else:
        frame = pd.DataFrame({"source": src, "target": [*tgt, *[None] * len(extra)]})
        frame.to_csv(path, sep="\t" if fmt == "tsv" else ",", index=False)
    path.write_bytes(path.read_bytes() + (raw or b""))
    return str(path)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.lists(SPLIT, min_size=1, max_size=2),
    fmt=st.sampled_from(["pair", "pair.gz", "jsonl", "tsv", "csv"]),
    raw=BAD_BYTES,
)
def test_malformed_parallel_inputs_load_or_raise_our_errors(data, fmt, raw):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = {
            split: _write_split(root, split, fmt, pairs, extra, raw if split == "train" else None)
            for split, (pairs, extra) in zip(("train", "validation"), data, strict=False)
        }
        try:
            splits = load_parallel_splits("files", cache_dir=root / "cache", **files)
        except (DataError, ConfigError) as e:
            event(f"{type(e).__name__}: {' '.join(str(e).split(' ')[-3:])[:40]}")
            return
        assert isinstance(splits, DatasetDict) and {"train", "validation"} <= set(splits)
        for ds in splits.values():
            assert ds.column_names == ["source", "target"] and len(ds) > 0
            assert all(isinstance(s, str) and s.strip() and t.strip() for s, t in _pairs(ds))
        event("loaded")
