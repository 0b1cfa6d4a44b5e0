import json
import logging
import tempfile
from pathlib import Path

import datasets
import pandas as pd
import pyarrow as pa
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from attnfit.data import classification
from attnfit.data.classification import (
    ClassificationCollator,
    _longest_first,
    class_weights,
    encode_labels,
    label_names_from,
    load_classification_splits,
    tokenize_for_classification,
)
from attnfit.data.synthetic import generate_lm_corpus
from attnfit.data.tokenizer import CLS_ID, EOS_ID, PAD_ID, SEP_ID, train_tokenizer
from attnfit.errors import ConfigError, DataError

TEXTS = [f"message {i} about {'cats' if i % 2 else 'dogs'}" for i in range(40)]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer("char", [*generate_lm_corpus(20, seed=0), *TEXTS, '"!?.,'], vocab_size=200)


def _files(tmp_path, **kwargs):
    kwargs.setdefault("cache_dir", tmp_path / "cache")
    files = {split: str(path) for split, path in kwargs.pop("files").items()}
    return load_classification_splits("files", files=files, **kwargs)


def _rows(ds):
    return sorted(zip(*(ds[c][:] for c in ds.column_names), strict=True))


# --- loading ----------------------------------------------------------------------------------------------


def test_csv_string_labels_stratified_split_off(tmp_path):
    labels = ["spam" if i % 4 == 0 else "ham" for i in range(40)]
    frame = pd.DataFrame({"id": range(42), "body": [*TEXTS, "  ", None], "kind": [*labels, "ham", "spam"]})
    frame.to_csv(tmp_path / "d.csv", index=False)
    splits = _files(
        tmp_path, files={"train": tmp_path / "d.csv"}, text_column="body", label_column="kind", val_fraction=0.2
    )
    assert set(splits) == {"train", "validation"}
    assert all(ds.column_names == ["text", "label"] for ds in splits.values())
    assert sorted(_rows(splits["train"]) + _rows(splits["validation"])) == sorted(zip(TEXTS, labels, strict=True))
    assert sorted(splits["validation"]["label"][:]) == ["ham"] * 6 + ["spam"] * 2  # stratified: 30/10 -> 6/2
    assert label_names_from(splits["train"]) == ["ham", "spam"]


def test_jsonl_int_labels_with_validation_and_test(tmp_path):
    for split, rows in (("train", range(30)), ("validation", range(30, 35)), ("test", range(35, 40))):
        lines = [json.dumps({"text": TEXTS[i], "label": [2, 10, 1][i % 3], "extra": 1}) for i in rows]
        (tmp_path / f"{split}.jsonl").write_text("\n".join(lines), encoding="utf-8")
    files = {s: tmp_path / f"{s}.jsonl" for s in ("train", "validation", "test")}
    splits = _files(tmp_path, files=files)
    assert set(splits) == {"train", "validation", "test"}
    assert splits["test"]["text"][:] == TEXTS[35:]
    assert splits["train"].features["label"] == Value("int64")
    assert label_names_from(splits["train"]["label"]) == ["1", "2", "10"]  # numerically


def test_headerless_tsv_with_column_names_and_quotes(tmp_path):
    texts = [
        'Go until jurong point, crazy.. "Available" only',
        '"Free entry" in 2 a wkly comp',
        'He said "hi and left',  # an unbalanced quote must not swallow the next lines
        "U dun say so early hor... U c already then say...",
        "Nah I don't think he goes to usf, he lives around here though",
        "Ok lar... Joking wif u oni '",
        "NA",  # a text, not a missing value
    ] * 3
    labels = ["ham", "spam", "ham", "ham", "spam", "ham", "spam"] * 3
    body = "".join(f"{label}\t{text}\n" for label, text in zip(labels, texts, strict=True))
    (tmp_path / "SMSSpamCollection.tsv").write_text(body, encoding="utf-8")
    splits = _files(tmp_path, files={"train": tmp_path / "SMSSpamCollection.tsv"}, column_names=["label", "text"])
    assert sorted(_rows(splits["train"]) + _rows(splits["validation"])) == sorted(zip(texts, labels, strict=True))
    with pytest.raises(ConfigError, match="column_names applies to csv/tsv"):
        (tmp_path / "a.jsonl").write_text('{"text": "a", "label": 1}\n')
        _files(tmp_path, files={"train": tmp_path / "a.jsonl"}, column_names=["label", "text"])


def test_text_pairs(tmp_path):
    premises = [f"premise {i}" for i in range(20)]
    hypotheses = [f"hypothesis {i}" for i in range(20)]
    labels = ["entailment", "neutral", "contradiction", "neutral"] * 5
    pd.DataFrame({"premise": [*premises, "p"], "hypothesis": [*hypotheses, " "], "gold": [*labels, "neutral"]}).to_csv(
        tmp_path / "nli.csv", index=False
    )
    splits = _files(
        tmp_path,
        files={"train": tmp_path / "nli.csv"},
        text_column="premise",
        text_pair_column="hypothesis",
        label_column="gold",
    )
    assert splits["train"].column_names == ["text", "text_pair", "label"]
    rows = _rows(splits["train"]) + _rows(splits["validation"])
    assert sorted(rows) == sorted(zip(premises, hypotheses, labels, strict=True))  # blank pair row dropped
    with pytest.raises(ConfigError, match="data.text_column and data.text_pair_column name the same column 'premise'"):
        _files(tmp_path, files={"train": tmp_path / "nli.csv"}, text_column="premise", text_pair_column="premise")


def _fake_hub(monkeypatch, splits: dict[str, tuple[list, list]]):
    features = Features({"sentence": Value("string"), "label": ClassLabel(names=["negative", "positive"])})

    def fake_load_dataset(path, name=None, **kwargs):
        return DatasetDict(
            {k: Dataset.from_dict({"sentence": t, "label": y}, features=features) for k, (t, y) in splits.items()}
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)


def test_hub_class_labels(monkeypatch, tmp_path):
    _fake_hub(monkeypatch, {"train": (TEXTS[:30], [i % 2 for i in range(30)]), "test": (TEXTS[30:], [1] * 10)})
    splits = load_classification_splits(
        "hub", hub_path="glue", hub_subset="sst2", hub_splits={"test": "test"}, text_column="sentence", val_fraction=0.2
    )
    assert set(splits) == {"train", "validation", "test"}
    assert splits["train"].features["label"] == Value("int64")  # ClassLabel -> its integer ids
    assert sorted(splits["validation"]["label"][:]) == [0, 0, 0, 1, 1, 1]
    assert splits["test"]["label"][:] == [1] * 10
    _fake_hub(monkeypatch, {"train": (TEXTS[:30], [i % 2 for i in range(30)]), "test": (TEXTS[30:], [-1] * 10)})
    with pytest.raises(DataError, match=r"10 of 10 rows in split 'test' from hub dataset 'glue' have no label"):
        load_classification_splits("hub", hub_path="glue", hub_splits={"test": "test"}, text_column="sentence")


def test_embedded(tmp_path):
    splits = load_classification_splits("embedded", cache_dir=tmp_path)
    assert (tmp_path / "embedded-classification" / "test.jsonl").is_file()
    assert {k: len(v) for k, v in splits.items()} == {"train": 2000, "validation": 500, "test": 500}
    assert label_names_from(splits["train"]) == ["grammatical", "ungrammatical"]
    assert splits["test"].column_names == ["text", "label"]
    with pytest.raises(ConfigError, match="text_pair_column"):
        load_classification_splits("embedded", cache_dir=tmp_path, text_pair_column="hypothesis")


# --- loading errors ---------------------------------------------------------------------------------------


def test_missing_columns(tmp_path):
    pd.DataFrame({"text": TEXTS, "y": 0}).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match=r"label column 'label' not found in .*d.csv.*available columns: text, y"):
        _files(tmp_path, files={"train": tmp_path / "d.csv"})
    with pytest.raises(DataError, match="text pair column 'hypothesis' not found.*available columns: text, y"):
        _files(tmp_path, files={"train": tmp_path / "d.csv"}, label_column="y", text_pair_column="hypothesis")
    (tmp_path / "plain.txt").write_text("a\nb\n")
    with pytest.raises(ConfigError, match="plain text, which has no labels"):
        _files(tmp_path, files={"train": tmp_path / "plain.txt"})
    with pytest.raises(ConfigError, match="'hb'.*embedded, files, hub"):
        load_classification_splits("hb")


def test_single_class(tmp_path):
    pd.DataFrame({"text": TEXTS, "label": "spam"}).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match=r"at least 2 classes, found 1: 'spam' \(split 'train' from .*d.csv"):
        _files(tmp_path, files={"train": tmp_path / "d.csv"})
    with pytest.raises(DataError, match="found 1: '3'"):
        label_names_from([3, 3])


@pytest.mark.parametrize(
    ("labels", "fmt"), [([0, 1, None, None], "csv"), (["a", None, "b", " "], "csv"), ([1, None, 0, 1], "jsonl")]
)
def test_missing_labels(tmp_path, labels, fmt):
    path = tmp_path / f"train.{fmt}"
    rows = [{"text": t, "label": y} for t, y in zip(TEXTS, labels * 10, strict=True)]
    if fmt == "csv":
        pd.DataFrame(rows).to_csv(path, index=False)  # int labels with a gap are read as floats with NaN
    else:
        path.write_text("\n".join(map(json.dumps, rows)), encoding="utf-8")
    (tmp_path / "val.jsonl").write_text('{"text": "a", "label": 1}\n')
    n_missing = sum(y is None or y == " " for y in labels) * 10
    with pytest.raises(DataError, match=rf"{n_missing} of 40 rows in split 'train' from .*train.{fmt}.* no label"):
        _files(tmp_path, files={"train": path, "validation": tmp_path / "val.jsonl"})
    with pytest.raises(DataError, match="missing values"):
        label_names_from(["a", None])


def test_float_labels(tmp_path):
    pd.DataFrame({"text": TEXTS[:4], "label": [0.0, 1.0, 1.0, 0.0]}).to_parquet(tmp_path / "ok.parquet")
    splits = _files(tmp_path, files={"train": tmp_path / "ok.parquet"}, val_fraction=0.5)
    assert sorted(splits["train"]["label"][:] + splits["validation"]["label"][:]) == [0, 0, 1, 1]
    pd.DataFrame({"text": TEXTS[:4], "label": [0.0, 0.5, 1.0, 0.0]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"non-integer numbers \(e.g. 0.5\)"):
        _files(tmp_path, files={"train": tmp_path / "bad.parquet"})


# --- labels -----------------------------------------------------------------------------------------------


def test_label_names_and_encoding():
    assert label_names_from(["spam", "ham", "spam"]) == ["ham", "spam"]
    assert label_names_from([10, 2, 1, 2]) == ["1", "2", "10"]
    assert label_names_from([True, False]) == ["False", "True"]
    assert label_names_from(pa.array(["b", "a", "b"])) == ["a", "b"]
    ds = Dataset.from_dict({"text": ["a", "b", "c"], "label": ["spam", "ham", "spam"]})
    assert encode_labels(ds, ["ham", "spam"], "train")["label"][:] == [1, 0, 1]
    ints = Dataset.from_dict({"text": ["a", "b"], "label": [10, 2]})
    assert encode_labels(ints, ["1", "2", "10"], "train")["label"][:] == [2, 1]


def test_unknown_labels_in_eval_split():
    test = Dataset.from_dict({"text": list("abcde"), "label": ["ham", "neutral", "neutral", "spam", "neutral"]})
    message = "unknown label 'neutral' in split 'test' (3 rows); the model knows: ham, spam"
    with pytest.raises(DataError) as info:
        encode_labels(test, ["ham", "spam"], "test")
    assert str(info.value) == message
    with pytest.raises(DataError, match="unknown labels 'x' .1 row., 'y' .1 row. in split 'validation'"):
        encode_labels(Dataset.from_dict({"text": ["a", "b"], "label": ["x", "y"]}), ["ham", "spam"], "validation")
    out_of_range = Dataset.from_dict({"text": ["a", "b"], "label": [0, 2]})
    with pytest.raises(DataError, match=r"unknown label '2' in split 'test' \(1 row\); the model knows: 0, 1"):
        encode_labels(out_of_range, ["0", "1"], "test")


# --- tokenization -----------------------------------------------------------------------------------------


def _ids(tok, text):
    return tok.encode(text, add_special_tokens=False).ids


def test_tokenize_single_and_pair_layout(tok):
    single = Dataset.from_dict({"text": ["cats", "a dog"], "label": ["b", "a"]})
    out = tokenize_for_classification(single, tok, max_len=32, label_names=["a", "b"])
    assert out.column_names == ["input_ids", "label"]
    assert out["input_ids"][:] == [[CLS_ID, *_ids(tok, "cats"), EOS_ID], [CLS_ID, *_ids(tok, "a dog"), EOS_ID]]
    assert out["label"][:] == [1, 0]
    pair = Dataset.from_dict({"text": ["cats"], "text_pair": ["dogs!"], "label": [1]})
    out = tokenize_for_classification(pair, tok, max_len=32, label_names=["0", "1"])
    assert out["input_ids"][0] == [CLS_ID, *_ids(tok, "cats"), SEP_ID, *_ids(tok, "dogs!"), EOS_ID]
    with pytest.raises(ConfigError, match="max_len must be >= 5 for text pairs"):
        tokenize_for_classification(pair, tok, max_len=4, label_names=["0", "1"])
    with pytest.raises(DataError, match="unknown label '1' in split 'dev'"):
        tokenize_for_classification(pair, tok, max_len=8, label_names=["a", "b"], split="dev")


def test_tokenize_truncation(tok, caplog):
    single = Dataset.from_dict({"text": ["abcdefgh", "abc", "abcdef"], "label": [0, 1, 0]})
    with caplog.at_level(logging.WARNING, logger="attnfit"):
        out = tokenize_for_classification(single, tok, max_len=6, label_names=["0", "1"], split="dev")
    assert [len(r) for r in out["input_ids"][:]] == [6, 5, 6]
    assert out["input_ids"][0] == [CLS_ID, *_ids(tok, "abcd"), EOS_ID]
    assert "2 of 3 texts in split 'dev' longer than max_len=6 were truncated" in caplog.text

    pair = Dataset.from_dict(
        {"text": ["aaaaaaaa", "ab", "abcd"], "text_pair": ["bc", "bbbbbbbb", "bcde"], "label": [0] * 3}
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="attnfit"):
        out = tokenize_for_classification(pair, tok, max_len=9, label_names=["0", "1"])
    a, b, s = (tok.token_to_id(c) for c in "abc")
    assert out["input_ids"][:] == [  # 6 tokens of text: the longer side is cut first
        [CLS_ID, *[a] * 4, SEP_ID, b, s, EOS_ID],
        [CLS_ID, a, b, SEP_ID, *[b] * 4, EOS_ID],
        [CLS_ID, *_ids(tok, "abc"), SEP_ID, *_ids(tok, "bcd"), EOS_ID],
    ]
    assert "3 of 3 texts in split 'train'" in caplog.text


def test_longest_first_matches_one_token_at_a_time():
    for len_a in range(12):
        for len_b in range(12):
            for budget in range(2, 14):
                a, b = len_a, len_b
                while a + b > budget:  # the reference: trim the longer, the second on ties
                    if a > b:
                        a -= 1
                    else:
                        b -= 1
                assert _longest_first(len_a, len_b, budget) == (a, b), (len_a, len_b, budget)


def test_tokenized_splits_are_cached(tmp_path, tok, monkeypatch):
    pd.DataFrame({"text": TEXTS, "label": ["x", "y"] * 20}).to_csv(tmp_path / "d.csv", index=False)
    splits = _files(tmp_path, files={"train": tmp_path / "d.csv"}, val_fraction=0.25)
    first = tokenize_for_classification(splits["validation"], tok, 16, ["x", "y"], "validation")
    again = _files(tmp_path, files={"train": tmp_path / "d.csv"}, val_fraction=0.25)  # as a second run would
    monkeypatch.setattr(classification, "_tokenize_batch", lambda *a, **k: pytest.fail("tokenized again"))
    second = tokenize_for_classification(again["validation"], tok, 16, ["x", "y"], "validation")
    assert second.cache_files == first.cache_files and second[:] == first[:]
    with pytest.raises(pytest.fail.Exception, match="tokenized again"):  # other settings are not taken from the cache
        tokenize_for_classification(again["validation"], tok, 12, ["x", "y"], "validation")
    with pytest.raises(pytest.fail.Exception, match="tokenized again"):
        tokenize_for_classification(again["validation"], tok, 16, ["y", "x"], "validation")


def test_num_proc(tok):
    ds = Dataset.from_dict({"text": TEXTS, "label": [i % 3 for i in range(40)]})
    out = tokenize_for_classification(ds, tok, 64, ["0", "1", "2"], num_proc=2)
    assert out["label"][:] == [i % 3 for i in range(40)] and len(out) == 40


# --- batches ----------------------------------------------------------------------------------------------


def test_collator():
    batch = ClassificationCollator(pad_id=PAD_ID)(
        [{"input_ids": [CLS_ID, 10, 11, EOS_ID], "label": 2}, {"input_ids": torch.tensor([CLS_ID, EOS_ID]), "label": 0}]
    )
    assert batch["input_ids"].tolist() == [[CLS_ID, 10, 11, EOS_ID], [CLS_ID, EOS_ID, PAD_ID, PAD_ID]]
    assert batch["padding_mask"].tolist() == [[False] * 4, [False, False, True, True]]
    assert batch["labels"].tolist() == [2, 0] and batch["labels"].dtype == torch.long
    assert batch["input_ids"].dtype == torch.long and batch["padding_mask"].dtype == torch.bool
    assert batch["num_tokens"] == 6


def test_collator_with_masking_adds_a_masked_copy_of_the_same_sentences(tok):
    from attnfit.tasks.language_modeling import masking_collator

    rows = [{"input_ids": [CLS_ID, *_ids(tok, text), EOS_ID], "label": i % 2} for i, text in enumerate(TEXTS)]
    plain = ClassificationCollator(pad_id=PAD_ID)(rows)
    batch = ClassificationCollator(PAD_ID, masking_collator("whole_word", 0.15, tok, seed=0))(rows)
    assert set(batch) == {*plain, "masked_input_ids", "masked_labels"} and "masked_input_ids" not in plain
    for key in plain:  # the classification batch itself is untouched
        assert torch.equal(torch.as_tensor(batch[key]), torch.as_tensor(plain[key])), key
    ids, masked, labels = batch["input_ids"], batch["masked_input_ids"], batch["masked_labels"]
    chosen = labels != -100
    assert 0 < chosen.sum() < (~batch["padding_mask"]).sum()
    assert torch.equal(labels[chosen], ids[chosen])  # labels hold the original tokens where chosen
    assert torch.equal(masked[~chosen], ids[~chosen])  # and the masked copy differs nowhere else
    assert not chosen[batch["padding_mask"]].any() and not chosen[:, 0].any()  # never padding or <cls>


def test_class_weights():
    weights = class_weights([0, 0, 0, 1, 2, 2], num_labels=3)  # inverse counts 1/3, 1, 1/2 -> mean 11/18
    assert weights.tolist() == pytest.approx([6 / 11, 18 / 11, 9 / 11])
    assert weights.mean().item() == pytest.approx(1.0) and weights.dtype == torch.float32
    assert class_weights(torch.tensor([1, 0, 1, 0]), 2).tolist() == [1.0, 1.0]
    with pytest.raises(DataError, match="class 1 of 3 never occur"):
        class_weights([0, 2, 2], num_labels=3)
    with pytest.raises(DataError, match=r"\[0, 2\); found 0..2"):
        class_weights([0, 1, 2], num_labels=2)


# --- property ---------------------------------------------------------------------------------------------

SAFE_TEXT = st.text(st.sampled_from("abc 我"), min_size=1, max_size=10)
TEXT = st.one_of(
    SAFE_TEXT,
    SAFE_TEXT,
    SAFE_TEXT,
    st.text(st.characters(exclude_categories=("Cs",)), max_size=20),
    st.text(st.sampled_from("ab \"'\t,\n"), max_size=12),
    st.sampled_from(["", " ", 'say "hi']),
)
SAFE_LABEL = st.sampled_from(["ham", "spam"])
LABEL = st.one_of(SAFE_LABEL, st.sampled_from([" ", "0", "x"]), st.integers(-1, 2), st.none())
ROWS = st.one_of(  # mostly clean data, so that most examples load; sometimes anything
    st.lists(st.tuples(SAFE_TEXT, SAFE_LABEL), min_size=4, max_size=16),
    st.lists(st.tuples(TEXT, st.one_of(SAFE_LABEL, LABEL)), min_size=4, max_size=16),
    st.lists(st.tuples(TEXT, LABEL), max_size=16),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=ROWS,
    test_rows=st.lists(st.tuples(st.one_of(SAFE_TEXT, TEXT), st.one_of(SAFE_LABEL, LABEL)), min_size=1, max_size=4),
    fmt=st.sampled_from(["jsonl", "csv", "tsv"]),
    max_len=st.integers(1, 10),
)
def test_arbitrary_data_succeeds_or_raises_data_error(tok, rows, test_rows, fmt, max_len):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = {}
        for split, split_rows in (("train", rows), ("test", test_rows)):
            path = root / f"{split}.{fmt}"
            if fmt == "jsonl":
                path.write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in split_rows), encoding="utf-8")
            else:  # header-less, label first, like the SMS Spam file; tsv is read with quotes literal
                sep = "," if fmt == "csv" else "\t"
                path.write_text("".join(f"{y}{sep}{t}\n" for t, y in split_rows), encoding="utf-8", newline="")
            files[split] = str(path)
        column_names = None if fmt == "jsonl" else ["label", "text"]
        try:
            splits = load_classification_splits(
                "files", files=files, column_names=column_names, val_fraction=0.3, cache_dir=root / "cache"
            )
            names = label_names_from(splits["train"])
            for split, ds in splits.items():
                assert ds.column_names == ["text", "label"] and len(ds) > 0
                assert all(t.strip() for t in ds["text"])
                out = tokenize_for_classification(ds, tok, max_len, names, split)
                assert len(out) == len(ds) and all(len(r) <= max_len for r in out["input_ids"])
                assert all(0 <= y < len(names) for y in out["label"])
            event("loaded and tokenized")
        except (DataError, ConfigError) as e:
            event(f"{type(e).__name__}: {str(e).split(')')[-1][:60]}")
