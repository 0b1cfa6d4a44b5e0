"""Sequence classification data: labelled text (or text pairs) from files, the hub or the embedded task.

``load_classification_splits`` returns raw splits with columns "text", optional "text_pair" and "label" (str or
int); ``label_names_from`` fixes the classes from the train split; ``tokenize_for_classification`` turns a split
into ``[cls] a [eos]`` / ``[cls] a [sep] b [eos]`` rows with integer labels, cached like ``tokenize_for_lm``.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import numbers
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value
from tokenizers import Tokenizer

from attnfit.data.lm import _pad
from attnfit.data.sources import (
    SOURCE_KINDS,
    _hub_splits,
    _read_split,
    _resolve_files,
    _split_off_validation,
    _to_columns,
    default_embedded_dir,
)
from attnfit.data.synthetic import write_embedded_classification
from attnfit.data.tokenizer import special_token_id, tokenizer_fingerprint
from attnfit.errors import ConfigError, DataError, check_choice

logger = logging.getLogger("attnfit")

CLASSIFICATION_DATA_VERSION = "2"  # bump when tokenize_for_classification's output changes
MAP_BATCH_SIZE = 1000
_INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool")
_FLOAT_DTYPES = ("float16", "float32", "float64")
_STRING_DTYPES = ("string", "large_string")


def default_embedded_classification_dir(cache_dir: str | Path | None) -> Path:
    """Where the embedded classification task lives when no directory is configured (next to the LM corpus)."""
    return default_embedded_dir(cache_dir).with_name("embedded-classification")


def _labels_arrow(ds: Dataset) -> pa.ChunkedArray:
    """The "label" column as arrow (row selections applied, nothing else read)."""
    return ds.with_format("arrow")["label"]


def _clean_labels(ds: Dataset, split: str, origin: str, label_column: str) -> Dataset:
    """Labels as str or int: ClassLabel and whole floats become int; DataError for missing or unusable labels.

    Missing: null, NaN, blank strings, and -1 in a ClassLabel column (the hub's mark for "no label").
    """
    feature = ds.features["label"]
    where = f"split {split!r} from {origin}"
    class_label = isinstance(feature, ClassLabel)
    if class_label:
        ds = ds.cast_column("label", Value("int64"))
        feature = ds.features["label"]
    elif not (isinstance(feature, Value) and feature.dtype in (*_INT_DTYPES, *_FLOAT_DTYPES, *_STRING_DTYPES, "null")):
        raise DataError(
            f"label column {label_column!r} in {where} holds {feature}, not class labels (strings or integers); "
            f"set data.label_column"
        )
    labels = _labels_arrow(ds)
    missing = labels.null_count
    if class_label:
        missing += pc.sum(pc.equal(labels, -1)).as_py() or 0
    elif feature.dtype in _FLOAT_DTYPES:
        missing += pc.sum(pc.is_nan(labels)).as_py() or 0
    elif feature.dtype in _STRING_DTYPES:
        missing += pc.sum(pc.equal(pc.utf8_trim_whitespace(labels), "")).as_py() or 0
    if missing:
        raise DataError(
            f"{missing} of {len(ds)} rows in {where} have no label (column {label_column!r}); "
            f"fill them in or drop those rows"
        )
    if feature.dtype in _FLOAT_DTYPES:
        values = labels.to_numpy()
        fractional = values[~np.isfinite(values) | (values != np.round(values))]
        if len(fractional):
            raise DataError(
                f"label column {label_column!r} in {where} holds non-integer numbers (e.g. {fractional[0]}); "
                f"class labels must be strings or integers"
            )
        ds = ds.cast_column("label", Value("int64"))
    return ds


def load_classification_splits(
    kind: str,
    *,
    files: dict[str, str | list[str]] | None = None,
    hub_path: str | None = None,
    hub_subset: str | None = None,
    hub_splits: dict[str, str] | None = None,
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str = "label",
    column_names: list[str] | None = None,
    file_format: str | None = None,
    val_fraction: float = 0.05,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    embedded_dir: Path | None = None,
) -> DatasetDict:
    """Load labelled splits: "train", "validation" and any others given (e.g. "test").

    Columns are renamed to "text", "text_pair" (only with ``text_pair_column``) and "label", whose values stay
    raw (strings or integers; hub ClassLabels become their integer ids). ``kind`` is one of:

    * "embedded": the agreement task of ``write_embedded_classification`` (train/validation/test), written once
      to ``embedded_dir``, default ``<cache_dir>/embedded-classification``; the column settings are ignored;
    * "files": ``files`` maps split -> path(s) or glob(s) of csv/tsv/json/parquet files, as in
      ``load_text_splits``. ``column_names`` names the columns of header-less csv/tsv files (then the first line
      is data). TSV is read without quoting: quote characters are literal, fields cannot contain tabs. Only
      empty csv/tsv fields count as missing ("NA" or "null" are kept as text);
    * "hub": ``datasets.load_dataset(hub_path, hub_subset)``, splits picked via ``hub_splits`` {ours: theirs}.

    Without a validation split ``val_fraction`` of train is held out with ``seed``, stratified by label when every
    label has enough rows. Rows with blank text (or blank text pair) are dropped. DataError for a missing column
    (naming the available ones), rows without a label, or a train split with fewer than 2 classes.
    """
    check_choice("data source kind", kind, SOURCE_KINDS)
    datasets.utils.logging.set_verbosity_warning()
    columns = {"text": text_column, "label": label_column}
    if text_pair_column is not None:
        columns = {"text": text_column, "text_pair": text_pair_column, "label": label_column}
    used = Counter(columns.values())
    if len(used) < len(columns) and kind != "embedded":
        clash = [f"data.{ours}_column" for ours, theirs in columns.items() if used[theirs] > 1]
        raise ConfigError(f"{' and '.join(clash)} name the same column {used.most_common(1)[0][0]!r}")

    if kind == "hub":
        raw, origin = _hub_splits(hub_path, hub_subset, hub_splits, cache_dir)
        raw = {ours: (ds, theirs, origin) for ours, (ds, theirs) in raw.items()}
    else:
        if kind == "embedded":
            if text_pair_column is not None:
                raise ConfigError("the embedded classification task has single texts; unset data.text_pair_column")
            directory = embedded_dir if embedded_dir is not None else default_embedded_classification_dir(cache_dir)
            files = {split: str(path) for split, path in write_embedded_classification(Path(directory)).items()}
            columns, column_names, file_format = {"text": "text", "label": "label"}, None, "json"
        elif not files:
            raise ConfigError("data.source 'files' needs data.train (a path or list of paths)")
        raw = {}
        for split, (paths, fmt, origin) in _resolve_files(files, file_format).items():
            if fmt == "text":
                raise ConfigError(
                    f"{origin} (split {split!r}) is plain text, which has no labels; "
                    f"use csv, tsv, json or parquet files with a text and a label column"
                )
            kwargs: dict = {}
            if column_names is not None:
                if fmt not in ("csv", "tsv"):
                    raise ConfigError(f"data.column_names applies to csv/tsv files only; {origin} is {fmt}")
                kwargs["column_names"] = list(column_names)
            raw[split] = (_read_split(split, paths, fmt, origin, cache_dir, **kwargs), split, origin)

    splits: dict[str, Dataset] = {}
    for ours, (ds, theirs, origin) in raw.items():
        ds = _to_columns(ds, columns, theirs, origin, text_columns=tuple(c for c in columns if c != "label"))
        splits[ours] = _clean_labels(ds, theirs, origin, label_column)
    origin = raw["train"][2]
    try:
        label_names_from(splits["train"])
    except DataError as e:
        raise DataError(f"{e} (split 'train' from {origin})") from None
    if "validation" not in splits:
        splits["train"], splits["validation"] = _split_off_validation(
            splits["train"], val_fraction, seed, origin, stratify_by="label"
        )
    return DatasetDict(splits)


def label_names_from(labels: Iterable | Dataset) -> list[str]:
    """Sorted distinct labels as strings: integers numerically ("2" before "10"), otherwise alphabetically.

    ``labels``: any sequence of labels, an arrow array, or a dataset (its "label" column, read without copying
    the dataset). DataError for a missing label or fewer than 2 classes.
    """
    if isinstance(labels, Dataset):
        if "label" not in labels.column_names:
            raise DataError(f"dataset has no 'label' column; available columns: {', '.join(labels.column_names)}")
        labels = _labels_arrow(labels).unique()
    if isinstance(labels, (pa.Array, pa.ChunkedArray)):
        labels = labels.to_pylist()
    distinct = set(labels)
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in distinct):
        raise DataError("labels contain missing values (None/NaN); fill them in or drop those rows")
    if all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in distinct):
        names = [str(v) for v in sorted({int(v) for v in distinct})]
    else:
        names = sorted({str(v) for v in distinct})
    if len(names) < 2:
        found = f"1: {names[0]!r}" if names else "none"
        raise DataError(f"classification needs at least 2 classes, found {found}")
    return names


def _rows(n: int) -> str:
    return f"{n} row{'s' if n != 1 else ''}"


def _check_known_labels(ds: Dataset, label_names: Sequence[str], split: str) -> None:
    """DataError for rows without a label or with a label outside ``label_names`` (compared as strings)."""
    if "label" not in ds.column_names:
        raise DataError(f"split {split!r} has no 'label' column; available columns: {', '.join(ds.column_names)}")
    labels = _labels_arrow(ds)
    if labels.null_count:
        raise DataError(f"split {split!r} has {_rows(labels.null_count)} without a label (of {len(ds)})")
    unknown = sorted({str(v) for v in labels.unique().to_pylist()} - set(label_names))
    if not unknown:
        return
    counts = Counter(str(v) for v in labels.to_pylist())
    if len(unknown) == 1:
        what = f"unknown label {unknown[0]!r} in split {split!r} ({_rows(counts[unknown[0]])})"
    else:
        listed = ", ".join(f"{name!r} ({_rows(counts[name])})" for name in unknown[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        what = f"unknown labels {listed}{more} in split {split!r}"
    raise DataError(f"{what}; the model knows: {', '.join(label_names)}")


def _label_index(label_names: Sequence[str]) -> dict[str, int]:
    if len(set(label_names)) != len(label_names):
        raise ConfigError(f"label names must be distinct, got: {', '.join(label_names)}")
    return {name: i for i, name in enumerate(label_names)}


def _encode_batch(batch: dict, index: dict[str, int]) -> dict:
    return {"label": [index[str(v)] for v in batch["label"]]}


def encode_labels(ds: Dataset, label_names: list[str], split: str) -> Dataset:
    """Replace "label" by its index in ``label_names`` (matched as ``str(label)``); DataError for unknown labels."""
    index = _label_index(label_names)
    _check_known_labels(ds, label_names, split)
    features = ds.features.copy()
    features["label"] = Value("int64")
    key = "|".join(map(str, (ds._fingerprint, "encode_labels", *label_names, CLASSIFICATION_DATA_VERSION)))
    return ds.map(
        _encode_batch,
        batched=True,
        batch_size=MAP_BATCH_SIZE,
        fn_kwargs={"index": index},
        features=features,
        new_fingerprint=hashlib.sha256(key.encode()).hexdigest()[:32],
        desc=f"encoding labels ({split})",
    )


def _longest_first(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """Lengths to keep of a pair so they fit ``budget``, trimming the longer one token at a time (ties: the second)."""
    if len_a + len_b <= budget:
        return len_a, len_b
    keep_a = min(len_a, max(budget - len_b, (budget + 1) // 2))
    return keep_a, min(len_b, budget - keep_a)


def pair_separator(tokenizer: Tokenizer, sep_id: int) -> list[int]:
    """The special ids between the two texts of a pair: those of the tokenizer's own pair template when it puts any
    there (RoBERTa's ``</s></s>``, so the ids equal the Hugging Face tokenizer's), else ``[sep]``."""
    a, b = (tokenizer.encode(text, add_special_tokens=False) for text in ("a", "b"))
    if not a.ids or not b.ids:
        return [sep_id]
    pair = tokenizer.post_process(a, b, add_special_tokens=True)  # e.g. <s> a </s> </s> b </s>
    special = pair.special_tokens_mask
    start = special.index(0) + len(a.ids)  # just after text A
    middle = itertools.takewhile(lambda i: special[i], range(start, len(special)))
    return [pair.ids[i] for i in middle] or [sep_id]


def _tokenize_batch(
    batch: dict,
    tokenizer: Tokenizer,
    max_len: int,
    index: dict[str, int],
    cls_id: int,
    sep_ids: list[int],
    eos_id: int,
) -> dict:
    """``[cls] a [eos]`` or ``[cls] a [sep…] b [eos]`` per row, cut to ``max_len``; labels to indices."""
    rows, truncated = [], []
    firsts = tokenizer.encode_batch(batch["text"], add_special_tokens=False)
    if "text_pair" in batch:
        seconds = tokenizer.encode_batch(batch["text_pair"], add_special_tokens=False)
        for a, b in zip(firsts, seconds, strict=True):
            a, b = a.ids, b.ids
            keep_a, keep_b = _longest_first(len(a), len(b), max_len - 2 - len(sep_ids))
            rows.append([cls_id, *a[:keep_a], *sep_ids, *b[:keep_b], eos_id])
            truncated.append(keep_a + keep_b < len(a) + len(b))
    else:
        for enc in firsts:
            ids = enc.ids
            rows.append([cls_id, *ids[: max_len - 2], eos_id])
            truncated.append(len(ids) > max_len - 2)
    return {"input_ids": rows, "label": [index[str(v)] for v in batch["label"]], "truncated": truncated}


def _special_ids(tokenizer: Tokenizer) -> dict[str, Any]:
    """``cls_id``, ``sep_ids`` and ``eos_id`` as :func:`_tokenize_batch` takes them."""
    sep_ids = pair_separator(tokenizer, special_token_id(tokenizer, "sep"))
    return {
        "cls_id": special_token_id(tokenizer, "cls"),
        "sep_ids": sep_ids,
        "eos_id": special_token_id(tokenizer, "eos"),
    }


def encode_for_classification(text: str, tokenizer: Tokenizer, max_len: int, text_pair: str | None = None) -> list[int]:
    """One input's ids, exactly as :func:`tokenize_for_classification` builds them (no dataset, nothing cached)."""
    batch = {"text": [text], "label": [""], **({"text_pair": [text_pair]} if text_pair is not None else {})}
    return _tokenize_batch(batch, tokenizer, max_len, {"": 0}, **_special_ids(tokenizer))["input_ids"][0]


def tokenize_for_classification(
    ds: Dataset,
    tokenizer: Tokenizer,
    max_len: int,
    label_names: list[str],
    split: str = "train",
    num_proc: int | None = None,
) -> Dataset:
    """Tokenize "text" (and "text_pair") into "input_ids" and encode "label" as its index in ``label_names``.

    Rows are ``[cls] text [eos]`` or ``[cls] text [sep] text_pair [eos]`` (two separators where the tokenizer's
    own pair template has them, as RoBERTa's does), cut to ``max_len`` tokens (pairs
    longest-first; a warning says how many rows were cut). Cached like ``tokenize_for_lm``: the key is the
    input's fingerprint + tokenizer content + ``max_len`` + ``label_names``. DataError for unknown labels.
    """
    for column in ("text", "label"):
        if column not in ds.column_names:
            raise DataError(
                f"split {split!r} has no {column!r} column; available columns: {', '.join(ds.column_names)}"
            )
    pair = "text_pair" in ds.column_names
    ids = _special_ids(tokenizer)
    min_len = 4 + len(ids["sep_ids"]) if pair else 3
    if max_len < min_len:
        raise ConfigError(
            f"data.max_len must be >= {min_len} for {'text pairs' if pair else 'single texts'} "
            f"(special tokens + one token of text each), got {max_len}"
        )
    index = _label_index(label_names)
    _check_known_labels(ds, label_names, split)
    key = "|".join(
        map(
            str, (ds._fingerprint, tokenizer_fingerprint(tokenizer), max_len, *label_names, CLASSIFICATION_DATA_VERSION)
        )
    )
    out = ds.map(
        _tokenize_batch,
        batched=True,
        batch_size=MAP_BATCH_SIZE,
        remove_columns=ds.column_names,
        num_proc=num_proc,
        fn_kwargs={
            "tokenizer": tokenizer,
            "max_len": max_len,
            "index": index,
            **ids,
        },
        features=Features({"input_ids": List(Value("int32")), "label": Value("int64"), "truncated": Value("bool")}),
        new_fingerprint=hashlib.sha256(key.encode()).hexdigest()[:32],
        desc=f"tokenizing ({split}, max_len={max_len})",
    )
    num_truncated = int(np.asarray(out.data.column("truncated")).sum()) if len(out) else 0
    if num_truncated:
        logger.warning(
            "%d of %d texts in split %r longer than max_len=%d were truncated", num_truncated, len(out), split, max_len
        )
    return out.remove_columns("truncated")


@dataclass
class ClassificationCollator:
    """Classification batches: right-padded "input_ids", "padding_mask" (True at padding) and "labels".

    ``masking`` (a masked-LM collator, ``finetune.mlm_weight``): the same sentences masked as well, as
    "masked_input_ids" and "masked_labels", for an auxiliary masked-LM loss."""

    pad_id: int
    masking: Any = None

    def __call__(self, examples: Sequence[dict]) -> dict:
        input_ids, padding_mask = _pad(examples, self.pad_id)
        batch = {
            "input_ids": input_ids,
            "padding_mask": padding_mask,
            "labels": torch.tensor([int(ex["label"]) for ex in examples], dtype=torch.long),
            "num_tokens": int((~padding_mask).sum()),
        }
        if self.masking is not None:
            masked = self.masking(examples)
            batch["masked_input_ids"], batch["masked_labels"] = masked["input_ids"], masked["labels"]
        return batch


def class_weights(labels: Sequence[int], num_labels: int) -> torch.Tensor:
    """Inverse-frequency class weights for the loss, scaled to mean 1 over the classes.

    ``labels`` are class indices (a list, tensor or datasets column); DataError if one is out of range or a
    class never occurs (its weight would be infinite).
    """
    if num_labels < 2:
        raise ConfigError(f"num_labels must be >= 2, got {num_labels}")
    values = np.asarray(labels.tolist() if isinstance(labels, torch.Tensor) else list(labels), dtype=np.int64)
    values = values.reshape(-1)
    if len(values) == 0:
        raise DataError("class_weights: no labels")
    if values.min() < 0 or values.max() >= num_labels:
        raise DataError(f"class indices must be in [0, {num_labels}); found {values.min()}..{values.max()}")
    counts = np.bincount(values, minlength=num_labels)
    absent = np.flatnonzero(counts == 0).tolist()
    if absent:
        raise DataError(
            f"class{'es' if len(absent) > 1 else ''} {', '.join(map(str, absent))} of {num_labels} never occur in the "
            f"labels, so inverse-frequency weights are undefined; add examples or turn class weighting off"
        )
    inverse = 1.0 / counts
    return torch.tensor(inverse / inverse.mean(), dtype=torch.float32)
