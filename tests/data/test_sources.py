import gzip
import json
import math

import datasets
import pandas as pd
import pytest
from datasets import Dataset, DatasetDict

from attnfit.data.sources import infer_file_format, load_text_splits
from attnfit.errors import ConfigError, DataError

LINES = [f"document number {i} about dogs ." for i in range(40)]


def _load(tmp_path, files, **kwargs):
    return load_text_splits(
        "files", files={k: str(v) for k, v in files.items()}, cache_dir=tmp_path / "cache", **kwargs
    )


def _texts(ds):
    return list(ds["text"])


def _check(splits, train, validation=None):
    assert set(splits) >= {"train", "validation"}
    for ds in splits.values():
        assert ds.column_names == ["text"]
    if validation is not None:
        assert _texts(splits["train"]) == train and _texts(splits["validation"]) == validation
    else:  # split off: 5% (rounded up) goes to validation, nothing lost or duplicated
        assert len(splits["validation"]) == math.ceil(0.05 * len(train))
        assert sorted(_texts(splits["train"]) + _texts(splits["validation"])) == sorted(train)


def test_txt_drops_blank_lines_and_splits_off_validation(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("\n".join(LINES[:20]) + "\n\n   \n\t\n" + "\n".join(LINES[20:]) + "\n", encoding="utf-8")
    _check(_load(tmp_path, {"train": path}), LINES)


def test_split_off_is_deterministic_per_seed(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("\n".join(LINES), encoding="utf-8")
    a = _texts(_load(tmp_path, {"train": path}, seed=1)["validation"])
    assert a == _texts(_load(tmp_path, {"train": path}, seed=1)["validation"])
    assert a != _texts(_load(tmp_path, {"train": path}, seed=2, val_fraction=0.2)["validation"])


def test_txt_gz_with_given_validation(tmp_path):
    with gzip.open(tmp_path / "train.txt.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(LINES[:30]))
    (tmp_path / "val.md").write_text("\n".join(LINES[30:]), encoding="utf-8")
    _check(
        _load(tmp_path, {"train": tmp_path / "train.txt.gz", "validation": tmp_path / "val.md"}), LINES[:30], LINES[30:]
    )


def test_csv_with_custom_text_column(tmp_path):
    pd.DataFrame({"id": range(40), "body": LINES, "label": 1}).to_csv(tmp_path / "d.csv", index=False)
    _check(_load(tmp_path, {"train": tmp_path / "d.csv"}, text_column="body"), LINES)


def test_tsv(tmp_path):
    pd.DataFrame({"text": LINES[:30], "x": 0}).to_csv(tmp_path / "a.tsv", sep="\t", index=False)
    pd.DataFrame({"text": LINES[30:], "x": 0}).to_csv(tmp_path / "b.tsv", sep="\t", index=False)
    _check(_load(tmp_path, {"train": tmp_path / "a.tsv", "validation": tmp_path / "b.tsv"}), LINES[:30], LINES[30:])


def test_jsonl_and_json_array_and_extra_split(tmp_path):
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"text": t, "n": 1}) for t in LINES[:30]), encoding="utf-8")
    (tmp_path / "b.json").write_text(json.dumps([{"text": t} for t in LINES[30:35]]), encoding="utf-8")
    (tmp_path / "c.json").write_text(json.dumps([{"text": t} for t in LINES[35:]]), encoding="utf-8")
    files = {"train": tmp_path / "a.jsonl", "validation": tmp_path / "b.json", "test": tmp_path / "c.json"}
    splits = _load(tmp_path, files)
    _check(splits, LINES[:30], LINES[30:35])
    assert _texts(splits["test"]) == LINES[35:]


def test_parquet_and_multiple_files_and_none_values(tmp_path):
    pd.DataFrame({"text": [*LINES[:20], None, "  "]}).to_parquet(tmp_path / "a.parquet")
    pd.DataFrame({"text": LINES[20:]}).to_parquet(tmp_path / "b.parquet")
    splits = load_text_splits(
        "files", files={"train": [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]}, cache_dir=tmp_path
    )
    _check(splits, LINES)


def test_glob_and_file_format_override(tmp_path):
    for i in range(2):
        (tmp_path / f"part{i}.log").write_text("\n".join(LINES[i * 20 : (i + 1) * 20]), encoding="utf-8")
    splits = _load(tmp_path, {"train": tmp_path / "part*.log"}, file_format="text")
    _check(splits, LINES)


def test_numeric_text_column_is_cast_to_string(tmp_path):
    pd.DataFrame({"n": range(1, 11)}).to_csv(tmp_path / "n.csv", index=False)
    splits = _load(tmp_path, {"train": tmp_path / "n.csv"}, text_column="n")
    assert sorted(_texts(splits["train"]) + _texts(splits["validation"])) == sorted(str(i) for i in range(1, 11))


def test_infer_file_format():
    assert infer_file_format("x/a.TXT") == "text"
    assert infer_file_format("a.jsonl.zst") == "json"
    assert infer_file_format("a.tsv.bz2") == "tsv"
    assert infer_file_format("a.parquet") == "parquet"


# --- errors ---------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.txt"):
        _load(tmp_path, {"train": tmp_path / "nope.txt"})
    with pytest.raises(DataError, match=r"zz\*\.txt"):
        _load(tmp_path, {"train": tmp_path / "zz*.txt"})


def test_unknown_extension(tmp_path):
    (tmp_path / "data.xyz").write_text("hello\n")
    with pytest.raises(ConfigError, match="data.xyz") as info:
        _load(tmp_path, {"train": tmp_path / "data.xyz"})
    assert "parquet" in str(info.value) and ".jsonl" in str(info.value)


def test_unknown_file_format(tmp_path):
    (tmp_path / "a.txt").write_text("hello\nworld\n")
    with pytest.raises(ConfigError, match="'xml'.*csv"):
        _load(tmp_path, {"train": tmp_path / "a.txt"}, file_format="xml")


def test_missing_text_column_lists_available(tmp_path):
    pd.DataFrame({"body": LINES, "label": 0}).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match="'content'.*available columns: body, label"):
        _load(tmp_path, {"train": tmp_path / "d.csv"}, text_column="content")


@pytest.mark.parametrize("name", ["empty.txt", "empty.jsonl", "empty.csv"])
def test_empty_file(tmp_path, name):
    (tmp_path / name).write_text("")
    with pytest.raises(DataError, match=name):
        _load(tmp_path, {"train": tmp_path / name})


def test_only_blank_lines(tmp_path):
    (tmp_path / "blank.txt").write_text("\n   \n\t\n\n")
    (tmp_path / "ok.txt").write_text("\n".join(LINES))
    with pytest.raises(DataError, match="'validation'.*blank.txt"):
        _load(tmp_path, {"train": tmp_path / "ok.txt", "validation": tmp_path / "blank.txt"})


def test_malformed_json(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{"text": ')
    with pytest.raises(DataError, match="bad.jsonl"):
        _load(tmp_path, {"train": tmp_path / "bad.jsonl"})


def test_single_row_cannot_be_split(tmp_path):
    (tmp_path / "one.txt").write_text("just one line\n")
    with pytest.raises(DataError, match="at least 2"):
        _load(tmp_path, {"train": tmp_path / "one.txt"})


def test_bad_kind_and_missing_config(tmp_path):
    with pytest.raises(ConfigError, match="'file'.*embedded, files, hub"):
        load_text_splits("file")
    with pytest.raises(ConfigError, match="train"):
        load_text_splits("files", files={"validation": "x.txt"})
    with pytest.raises(ConfigError, match="data.path"):
        load_text_splits("hub")


# --- hub (monkeypatched, offline) -----------------------------------------------------------------------


def _fake_hub(monkeypatch, splits):
    calls = []

    def fake_load_dataset(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        return DatasetDict({k: Dataset.from_dict({"content": v, "label": [0] * len(v)}) for k, v in splits.items()})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    return calls


def test_hub_with_validation(monkeypatch, tmp_path):
    calls = _fake_hub(monkeypatch, {"train": [*LINES[:30], " "], "validation": LINES[30:], "test": ["t"]})
    splits = load_text_splits(
        "hub", hub_path="org/corpus", hub_subset="small", text_column="content", cache_dir=tmp_path
    )
    assert calls == [("org/corpus", "small", {"cache_dir": str(tmp_path)})]
    assert set(splits) == {"train", "validation"}
    _check(splits, LINES[:30], LINES[30:])


def test_hub_without_validation_splits_one_off(monkeypatch):
    _fake_hub(monkeypatch, {"train": LINES})
    splits = load_text_splits("hub", hub_path="corpus", text_column="content")
    _check(splits, LINES)


def test_hub_split_mapping(monkeypatch):
    _fake_hub(monkeypatch, {"train": LINES[:30], "dev": LINES[30:35], "test": LINES[35:]})
    hub_splits = {"train": "train", "validation": "dev", "test": "test"}
    splits = load_text_splits("hub", hub_path="corpus", hub_splits=hub_splits, text_column="content")
    _check(splits, LINES[:30], LINES[30:35])
    assert _texts(splits["test"]) == LINES[35:]
    hub_splits = {"train": "test", "validation": "validation"}  # the usual name, absent here: split off
    splits = load_text_splits("hub", hub_path="corpus", hub_splits=hub_splits, text_column="content")
    assert len(splits["train"]) + len(splits["validation"]) == len(LINES[35:])  # no "validation" there: split off
    with pytest.raises(DataError, match="'valid'.*available splits: train, dev, test"):
        load_text_splits("hub", hub_path="corpus", hub_splits={"validation": "valid"}, text_column="content")
    with pytest.raises(DataError, match="available columns: content, label"):
        load_text_splits("hub", hub_path="corpus")


def test_embedded(tmp_path):
    splits = load_text_splits("embedded", cache_dir=tmp_path, num_train_docs=50, num_val_docs=10)
    assert (tmp_path / "embedded" / "train.txt").is_file()
    assert len(splits["train"]) == 50 and len(splits["validation"]) == 10
    other = load_text_splits(
        "embedded", embedded_dir=tmp_path / "elsewhere", cache_dir=tmp_path, num_train_docs=20, num_val_docs=5
    )
    assert (tmp_path / "elsewhere" / "validation.txt").is_file() and len(other["train"]) == 20


def test_tail_split_holds_out_the_end_of_a_running_text(tmp_path):
    """The standard split of one running text (Tiny Shakespeare: first 90% train, last 10% validation), by
    characters at a line boundary, in order: no line of the end is seen in training."""
    lines = [f"line {i} " + "x" * (i % 7) for i in range(200)]
    path = tmp_path / "play.txt"
    path.write_text("\n".join(lines) + "\n")
    splits = load_text_splits("files", files={"train": str(path)}, val_fraction=0.1, val_split="tail")
    train, validation = list(splits["train"]["text"]), list(splits["validation"]["text"])
    assert train + validation == lines  # in order, nothing lost or shuffled
    share = sum(map(len, validation)) / sum(map(len, lines))
    assert 0.09 <= share <= 0.11 and validation[0] == lines[len(train)]
    with pytest.raises(ConfigError, match="data.val_split 'end'"):
        load_text_splits("files", files={"train": str(path)}, val_split="end")


def test_tsv_quotes_are_literal_as_in_every_other_reader(tmp_path):
    """A double quote in a TSV row must not swallow the rows after it (it did: 400 rows became 320 examples)."""
    rows = [f'he said "stop{i} and went' if i % 3 == 0 else f"plain row {i}" for i in range(40)]
    path = tmp_path / "corpus.tsv"
    path.write_text("text\n" + "\n".join(rows) + "\n")
    splits = load_text_splits("files", files={"train": str(path), "validation": str(path)})
    assert list(splits["train"]["text"]) == rows
