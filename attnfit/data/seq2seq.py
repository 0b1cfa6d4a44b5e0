"""Sequence-to-sequence data (translation, summarisation): parallel texts as "source"/"target" pairs.

``load_parallel_splits`` returns raw splits with exactly the columns "source" and "target" (from the embedded toy
translation task, local files or the hub); ``tokenize_for_seq2seq`` turns a split into "source_ids" (``... [eos]``)
and "target_ids" (``[bos] ... [eos]``), cached like ``tokenize_for_lm``; ``Seq2SeqCollator`` pads them into
teacher-forcing batches.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
from datasets import Dataset, DatasetDict, Features, List, Translation, Value
from datasets.arrow_writer import SchemaInferenceError
from tokenizers import Tokenizer

from attnfit.data.lm import IGNORE_INDEX, _pad
from attnfit.data.sources import (
    _COMPRESSION_SUFFIXES,
    _EXTENSION_FORMATS,
    FILE_FORMATS,
    SOURCE_KINDS,
    _expand,
    _hub_splits,
    _read_split,
    _split_off_validation,
    _to_columns,
    default_embedded_dir,
    split_format,
)
from attnfit.data.synthetic_seq2seq import write_embedded_translation
from attnfit.data.tokenizer import special_token_id, tokenizer_fingerprint
from attnfit.errors import ConfigError, DataError, check_choice

logger = logging.getLogger("attnfit")

SEQ2SEQ_DATA_VERSION = "1"  # bump when tokenize_for_seq2seq's output changes, to invalidate cached results
MAP_BATCH_SIZE = 1000
PARALLEL_SIDES = ("both", "source", "target")
_PAIR_COLUMNS = ("source", "target")

PathSpec = str | Path | Sequence[str | Path]
SplitSpec = PathSpec | Mapping[str, PathSpec]


def default_embedded_translation_dir(cache_dir: str | Path | None) -> Path:
    """Where the embedded translation task lives when no directory is configured (next to the LM corpus)."""
    return default_embedded_dir(cache_dir).with_name("embedded-translation")


def _origin(paths: list[str]) -> str:
    return ", ".join(repr(p) for p in paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


def _is_table(path: str | Path) -> bool:
    """True for a csv/tsv/json/parquet name (compressed or not): such files hold both sides of a pair."""
    name = Path(path).name.lower()
    for suffix in _COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    return _EXTENSION_FORMATS.get(Path(name).suffix, "text") != "text"


def _is_pair(spec: SplitSpec) -> bool:
    """A split given as {"source": ..., "target": ...}, or as two paths that are not both tables (then shards)."""
    if isinstance(spec, Mapping):
        return True
    if isinstance(spec, (str, Path)) or len(spec) != 2:
        return False
    return not all(_is_table(p) for p in spec)


def _caused_by(error: BaseException | None, cls: type[BaseException]) -> bool:
    while error is not None:
        if isinstance(error, cls):
            return True
        error = error.__cause__ or error.__context__
    return False


def _read_pair(split: str, spec: SplitSpec, cache_dir: str | Path | None) -> tuple[Dataset, str]:
    """Two plain-text files (or shard lists), line i of one the translation of line i of the other, side by side."""
    if isinstance(spec, Mapping):
        if set(spec) != set(_PAIR_COLUMNS):
            raise ConfigError(
                f"data.{split} as a pair of files needs exactly the keys 'source' and 'target', "
                f"got: {', '.join(map(repr, spec)) or '(none)'}"
            )
        sides = [spec["source"], spec["target"]]
    else:
        sides = list(spec)
    read = []
    for given in sides:
        paths = _expand(split, given)
        origin = _origin(paths)
        try:
            read.append((_read_split(split, paths, "text", origin, cache_dir), origin))
        except DataError as e:
            if not _caused_by(e, SchemaInferenceError):
                raise
            raise DataError(f"data file {origin} (split {split!r}) has no lines") from None  # e.g. an empty .gz
    (src, src_origin), (tgt, tgt_origin) = read
    if len(src) != len(tgt):
        raise DataError(
            f"the parallel files of split {split!r} differ in length: {src_origin} has {len(src)} lines, "
            f"{tgt_origin} has {len(tgt)} lines; line i of the source file must translate line i of the target file"
        )
    both = datasets.concatenate_datasets(
        [src.rename_column("text", "source"), tgt.rename_column("text", "target")], axis=1
    )
    return both, f"{src_origin} + {tgt_origin}"


def _read_table(
    split: str, spec: PathSpec, file_format: str | None, column_names: list[str] | None, cache_dir: str | Path | None
) -> tuple[Dataset, str]:
    """csv/tsv/json/parquet file(s) holding both sides as columns (or translation records)."""
    paths = _expand(split, spec)
    origin = _origin(paths)
    fmt = split_format(split, paths, file_format)
    if fmt == "text":
        raise ConfigError(
            f"{origin} (split {split!r}) is plain text, which holds one side only; give the split as a pair of "
            f"files {{'source': ..., 'target': ...}} or as csv/tsv/json/parquet with a source and a target column"
        )
    kwargs: dict = {}
    if column_names is not None:
        if fmt not in ("csv", "tsv"):
            raise ConfigError(f"data.column_names applies to csv/tsv files only; {origin} is {fmt}")
        kwargs["column_names"] = list(column_names)
    return _read_split(split, paths, fmt, origin, cache_dir, **kwargs), origin


def _languages(feature: object) -> list[str] | None:
    """Languages of a translation-records column ({"de": ..., "en": ...}), None if it is not one."""
    if isinstance(feature, Translation):
        return list(feature.languages)
    if isinstance(feature, dict):
        return list(feature)
    return None


def _pair_columns(
    ds: Dataset,
    split: str,
    origin: str,
    source_column: str,
    target_column: str,
    source_lang: str | None,
    target_lang: str | None,
    translation_column: str,
) -> Dataset:
    """Exactly "source" and "target" as strings, from the given columns or the languages of translation records;
    pairs with a blank side dropped (with a warning)."""
    where = f"{origin} (split {split!r})"
    if source_lang is None:
        columns = {"source": source_column, "target": target_column}
    elif translation_column in ds.column_names:
        languages = _languages(ds.features[translation_column])
        if languages is None:
            raise DataError(
                f"column {translation_column!r} of {where} holds {ds.features[translation_column]}, not translation "
                f'records like {{"{source_lang}": ..., "{target_lang}": ...}}; set data.translation_column'
            )
        for lang in (source_lang, target_lang):
            if lang not in languages:
                raise DataError(
                    f"language {lang!r} not in the {translation_column!r} column of {where}; "
                    f"available languages: {', '.join(languages) or '(none)'}"
                )
        ds = ds.select_columns([translation_column]).flatten()
        columns = {"source": f"{translation_column}.{source_lang}", "target": f"{translation_column}.{target_lang}"}
    elif source_lang in ds.column_names and target_lang in ds.column_names:  # one column per language
        columns = {"source": source_lang, "target": target_lang}
    else:
        raise DataError(
            f"{where} has no {translation_column!r} column of translation records and no columns named "
            f"{source_lang!r} and {target_lang!r}; available columns: {', '.join(ds.column_names) or '(none)'}"
        )
    before = len(ds)
    ds = _to_columns(ds, columns, split, origin, text_columns=_PAIR_COLUMNS)
    if len(ds) < before:
        logger.warning(
            "dropped %d of %d pairs in split %r from %s whose source or target is blank", before - len(ds), before,
            split, origin,
        )  # fmt: skip
    return ds


def load_parallel_splits(
    source: str = "embedded",
    *,
    cache_dir: str | Path | None = None,
    train: SplitSpec | None = None,
    validation: SplitSpec | None = None,
    test: SplitSpec | None = None,
    source_column: str = "source",
    target_column: str = "target",
    source_lang: str | None = None,
    target_lang: str | None = None,
    translation_column: str = "translation",
    path: str | None = None,
    subset: str | None = None,
    hub_splits: dict[str, str] | None = None,
    file_format: str | None = None,
    column_names: list[str] | None = None,
    num_train: int = 20000,
    num_val: int = 1000,
    num_test: int = 1000,
    val_fraction: float = 0.05,
    seed: int = 0,
    embedded_dir: str | Path | None = None,
) -> DatasetDict:
    """Load parallel splits: "train", "validation" and "test" where given, each with exactly "source" and "target".

    ``source`` is one of:

    * "embedded": the toy translation task of ``write_embedded_translation`` (``num_train``/``num_val``/``num_test``
      pairs), written once to ``embedded_dir``, default ``<cache_dir>/embedded-translation``; column settings are
      ignored;
    * "files": ``train``/``validation``/``test`` each as
      - a pair of plain-text files ``{"source": "train.de", "target": "train.en"}`` or ``["train.de", "train.en"]``
        (either side may also be a glob or a list of shards), one sentence per line, optionally compressed (.gz);
        both sides must have the same number of lines. Lines end at "\\n", "\\r\\n" or "\\r";
      - csv/tsv/json/jsonl/parquet file(s) (a path, glob or list; two paths are a pair unless both are such
        files) with ``source_column``/``target_column``, or, with ``source_lang``/``target_lang``, records
        ``{"translation": {"de": ..., "en": ...}}`` in ``translation_column`` (or one column per language).
        ``column_names`` names the columns of header-less csv/tsv; tsv is read without quoting;
    * "hub": ``datasets.load_dataset(path, subset)``, splits picked via ``hub_splits`` {ours: theirs} as in
      ``load_text_splits``: translation records with ``source_lang``/``target_lang`` (e.g. "wmt16", "de-en") or
      summarisation columns (e.g. "cnn_dailymail", "3.0.0", source_column="article", target_column="highlights").

    Pairs with a blank side are dropped, with a warning saying how many. Without a validation split ``val_fraction``
    of train is held out with ``seed``. DataError for missing or unreadable files (non-UTF-8 text included), a
    missing column (naming the available ones) or a split with no pair left.
    """
    check_choice("data source kind", source, SOURCE_KINDS)
    datasets.utils.logging.set_verbosity_warning()
    if source != "embedded":  # the embedded task ignores the column settings
        if (source_lang is None) != (target_lang is None):
            raise ConfigError("give both data.source_lang and data.target_lang (or neither)")
        if source_lang is not None and source_lang == target_lang:
            raise ConfigError(f"data.source_lang and data.target_lang are both {source_lang!r}")
        if source_lang is None and source_column == target_column:
            raise ConfigError(f"data.source_column and data.target_column name the same column {source_column!r}")
    if file_format is not None:
        check_choice("data.format", file_format, FILE_FORMATS)
    given = {
        split: spec
        for split, spec in (("train", train), ("validation", validation), ("test", test))
        if spec is not None
    }
    columns = (source_column, target_column, source_lang, target_lang, translation_column)

    raw: dict[str, tuple[Dataset, str, str]] = {}  # our split: (dataset, its split name at the origin, origin)
    if source == "embedded":
        if given:
            raise ConfigError(
                f"data.source 'embedded' takes no files; unset data.{', data.'.join(given)} or use data.source 'files'"
            )
        directory = Path(embedded_dir) if embedded_dir is not None else default_embedded_translation_dir(cache_dir)
        for split, file in write_embedded_translation(directory, num_train, num_val, num_test, seed).items():
            origin = repr(str(file))
            raw[split] = (_read_split(split, [str(file)], "json", origin, cache_dir), split, origin)
        columns = ("source", "target", None, None, translation_column)
    elif source == "files":
        if "train" not in given:
            raise ConfigError(
                f"data.source 'files' needs data.train (a pair of text files or a table of pairs); "
                f"got: {', '.join(f'data.{s}' for s in given) or '(nothing)'}"
            )
        for split, spec in given.items():
            if _is_pair(spec):
                ds, origin = _read_pair(split, spec, cache_dir)
            else:
                ds, origin = _read_table(split, spec, file_format, column_names, cache_dir)
            raw[split] = (ds, split, origin)
    else:
        try:
            hub, origin = _hub_splits(path, subset, hub_splits, cache_dir)
        except ValueError as e:  # e.g. datasets' "Config name is missing" for wmt16 without data.subset
            raise DataError(f"could not load hub dataset {path!r}: {e}") from e
        raw = {ours: (ds, theirs, origin) for ours, (ds, theirs) in hub.items()}

    splits = {ours: _pair_columns(ds, theirs, origin, *columns) for ours, (ds, theirs, origin) in raw.items()}
    if "validation" not in splits:
        splits["train"], splits["validation"] = _split_off_validation(
            splits["train"], val_fraction, seed, raw["train"][2]
        )
    return DatasetDict(splits)


def parallel_texts(ds: Dataset, side: str = "both", batch_size: int = MAP_BATCH_SIZE) -> Iterator[str]:
    """Texts of one side ("source", "target") or both, e.g. to train a tokenizer: a joint tokenizer (the default,
    "both") shares subwords between languages; separate ones keep each vocabulary small."""
    check_choice("side", side, PARALLEL_SIDES)
    names = list(_PAIR_COLUMNS) if side == "both" else [side]
    for name in names:
        if name not in ds.column_names:
            raise DataError(f"dataset has no {name!r} column; available columns: {', '.join(ds.column_names)}")
    for batch in ds.select_columns(names).iter(batch_size=batch_size):
        for name in names:
            yield from batch[name]


def _tokenize_batch(
    batch: dict,
    indices: list[int],
    source_tokenizer: Tokenizer,
    target_tokenizer: Tokenizer,
    max_source_len: int,
    max_target_len: int,
    source_eos: int,
    target_bos: int,
    target_eos: int,
) -> dict:
    """``source [eos]`` and ``[bos] target [eos]`` per pair, cut to the max lengths; flags what was cut."""
    sources = source_tokenizer.encode_batch(batch["source"], add_special_tokens=False)
    targets = target_tokenizer.encode_batch(batch["target"], add_special_tokens=False)
    keep_source, keep_target = max_source_len - 1, max_target_len - 2
    out: dict[str, list] = {"source_ids": [], "target_ids": [], "source_cut": [], "target_cut": []}
    for src, tgt in zip(sources, targets, strict=True):
        s, t = src.ids, tgt.ids
        out["source_ids"].append([*s[:keep_source], source_eos])
        out["target_ids"].append([target_bos, *t[:keep_target], target_eos])
        out["source_cut"].append(len(s) > keep_source)
        out["target_cut"].append(len(t) > keep_target)
    out["index"] = indices
    return out


def tokenize_for_seq2seq(
    ds: Dataset,
    source_tokenizer: Tokenizer,
    target_tokenizer: Tokenizer,
    max_source_len: int,
    max_target_len: int,
    num_proc: int | None = None,
    split: str = "train",
) -> Dataset:
    """Tokenize "source"/"target" into int32 "source_ids" (``... [eos]``) and "target_ids" (``[bos] ... [eos]``).

    Pass the same tokenizer twice for a joint vocabulary. Sequences are cut to ``max_source_len``/
    ``max_target_len`` tokens, specials included (a warning says how many pairs were cut). "index" keeps each
    pair's row in ``ds``, to find the raw texts again (e.g. for BLEU). Cached like ``tokenize_for_lm``: the key is
    the input's fingerprint + both tokenizers' content + the max lengths.
    """
    for column in _PAIR_COLUMNS:
        if column not in ds.column_names:
            raise DataError(
                f"split {split!r} has no {column!r} column; available columns: {', '.join(ds.column_names)}"
            )
    if max_source_len < 2:
        raise ConfigError(f"data.max_source_len must be >= 2 (one token + [eos]), got {max_source_len}")
    if max_target_len < 3:
        raise ConfigError(f"data.max_target_len must be >= 3 ([bos] + one token + [eos]), got {max_target_len}")
    source_fp = tokenizer_fingerprint(source_tokenizer)
    target_fp = source_fp if target_tokenizer is source_tokenizer else tokenizer_fingerprint(target_tokenizer)
    key = "|".join(map(str, (ds._fingerprint, source_fp, target_fp, max_source_len, max_target_len)))
    key += f"|{SEQ2SEQ_DATA_VERSION}"
    features = Features(
        {
            "source_ids": List(Value("int32")),
            "target_ids": List(Value("int32")),
            "source_cut": Value("bool"),
            "target_cut": Value("bool"),
            "index": Value("int64"),
        }
    )
    out = ds.map(
        _tokenize_batch,
        batched=True,
        batch_size=MAP_BATCH_SIZE,
        with_indices=True,
        remove_columns=ds.column_names,
        num_proc=num_proc,
        fn_kwargs={
            "source_tokenizer": source_tokenizer,
            "target_tokenizer": target_tokenizer,
            "max_source_len": max_source_len,
            "max_target_len": max_target_len,
            "source_eos": special_token_id(source_tokenizer, "eos"),
            "target_bos": special_token_id(target_tokenizer, "bos"),
            "target_eos": special_token_id(target_tokenizer, "eos"),
        },
        features=features,
        new_fingerprint=hashlib.sha256(key.encode()).hexdigest()[:32],
        desc=f"tokenizing pairs ({split}, max_source_len={max_source_len}, max_target_len={max_target_len})",
    )
    if len(out):
        source_cut = np.asarray(out.data.column("source_cut"))
        target_cut = np.asarray(out.data.column("target_cut"))
        num_cut = int((source_cut | target_cut).sum())
        if num_cut:
            logger.warning(
                "%d of %d pairs in split %r were truncated (%d sources longer than max_source_len=%d, "
                "%d targets longer than max_target_len=%d)",
                num_cut, len(out), split, int(source_cut.sum()), max_source_len, int(target_cut.sum()), max_target_len,
            )  # fmt: skip
    return out.remove_columns(["source_cut", "target_cut"])


@dataclass
class Seq2SeqCollator:
    """Teacher-forcing batches: the decoder reads ``target_ids[:-1]`` and predicts ``target_ids[1:]``.

    Returns "source_ids" (B, S) and "source_padding_mask" (True at padding), "target_in" (B, T) padded with ``pad_id``,
    "target_padding_mask" (True at padding), "labels" (B, T) padded with -100, "num_target_tokens" (a 0-d tensor, the
    number of labels the loss sees), "num_tokens" (source + target tokens, for throughput), "index" (B,) when
    every example has one, and "target_text" (the raw references BLEU is computed on) when examples carry it.
    """

    pad_id: int

    def __call__(self, examples: Sequence[dict]) -> dict:
        targets = [torch.as_tensor(ex["target_ids"], dtype=torch.long).reshape(-1) for ex in examples]
        if any(len(t) < 2 for t in targets):
            raise DataError(
                "every target_ids needs at least 2 tokens ([bos] ... [eos]); tokenize_for_seq2seq adds them"
            )
        source_ids, source_padding_mask = _pad([{"input_ids": ex["source_ids"]} for ex in examples], self.pad_id)
        target_in, target_padding_mask = _pad([{"input_ids": t[:-1]} for t in targets], self.pad_id)
        labels, _ = _pad([{"input_ids": t[1:]} for t in targets], IGNORE_INDEX)
        batch = {
            "source_ids": source_ids,
            "source_padding_mask": source_padding_mask,
            "target_in": target_in,
            "target_padding_mask": target_padding_mask,
            "labels": labels,
            "num_target_tokens": (~target_padding_mask).sum(),
        }
        batch["num_tokens"] = int((~source_padding_mask).sum() + batch["num_target_tokens"])
        if examples and all("index" in ex for ex in examples):
            batch["index"] = torch.tensor([int(ex["index"]) for ex in examples], dtype=torch.long)
        if examples and "target_text" in examples[0]:
            batch["target_text"] = [ex["target_text"] for ex in examples]
        return batch
