"""Load raw text as a ``DatasetDict`` with "train" and "validation" splits and a single "text" column.

Three sources: the embedded toy corpus (offline), local files in common formats, and the Hugging Face hub.
Everything goes through ``datasets`` so results are memory-mapped and cached between runs.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import hashlib
from collections.abc import Iterator
from pathlib import Path

import datasets
import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from attnfit.data.synthetic import write_embedded_corpus
from attnfit.errors import ConfigError, DataError, check_choice

SOURCE_KINDS = ("embedded", "files", "hub")
FILE_FORMATS = ("text", "csv", "tsv", "json", "parquet")
_EXTENSION_FORMATS = {
    ".txt": "text", ".text": "text", ".md": "text",
    ".csv": "csv", ".tsv": "tsv",
    ".json": "json", ".jsonl": "json",
    ".parquet": "parquet",
}  # fmt: skip
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")
_VERSION = "1"  # bump to invalidate cached filter results


def default_embedded_dir(cache_dir: str | Path | None) -> Path:
    """Where the embedded corpus lives when no directory is configured."""
    if cache_dir is not None:
        return Path(cache_dir) / "embedded"
    return Path.home() / ".cache" / "attnfit" / "embedded"


def infer_file_format(path: str) -> str:
    """Format name ("text", "csv", "tsv", "json", "parquet") from the extension, ignoring a compression suffix."""
    name = Path(path).name.lower()
    for suffix in _COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    fmt = _EXTENSION_FORMATS.get(Path(name).suffix)
    if fmt is None:
        raise ConfigError(
            f"cannot infer the format of data file {path!r} from its extension; known extensions: "
            f"{', '.join(_EXTENSION_FORMATS)} (optionally + {', '.join(_COMPRESSION_SUFFIXES)}); "
            f"or set data.format to one of: {', '.join(FILE_FORMATS)}"
        )
    return fmt


def _expand(split: str, paths: str | Path | list[str | Path]) -> list[str]:
    """Expand globs and check every file exists, so users get our message rather than a datasets traceback."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise ConfigError(f"data.{split} is empty; give a path or a list of paths")
    out: list[str] = []
    for p in map(str, paths):
        if glob.has_magic(p):
            matches = sorted(glob.glob(p, recursive=True))
            if not matches:
                raise DataError(f"data file pattern {p!r} (split {split!r}) matches no files")
            out.extend(matches)
        elif not Path(p).is_file():
            missing = (
                "is a directory (give its files, or a pattern such as DIR/*.txt)"
                if Path(p).is_dir()
                else "does not exist"
            )
            raise DataError(f"data file {p!r} (split {split!r}) {missing}")
        else:
            out.append(p)
    for p in out:
        if Path(p).stat().st_size == 0:
            raise DataError(f"data file {p!r} (split {split!r}) is empty")
    return out


def split_format(split: str, paths: list[str], file_format: str | None) -> str:
    """``file_format`` if given, else the one format all of a split's files share (ConfigError if they mix)."""
    if file_format is not None:
        return file_format
    formats = {p: infer_file_format(p) for p in paths}
    if len(set(formats.values())) > 1:
        raise ConfigError(
            f"data.{split} mixes formats ({', '.join(f'{p!r}: {f}' for p, f in formats.items())}); "
            f"use one format per split"
        )
    return formats[paths[0]]


def _builder_args(fmt: str) -> tuple[str, dict]:
    """The ``datasets`` builder and its options for a file format, the same for every task's reader: "NA", "null"
    and "None" are texts, not missing values; quotes are literal in TSV (its fields hold no tabs)."""
    if fmt == "tsv":
        return "csv", {"delimiter": "\t", "quoting": csv.QUOTE_NONE, "keep_default_na": False}
    if fmt == "csv":
        return "csv", {"keep_default_na": False}
    return fmt, {}


def _not_blank(batch: dict, columns: tuple[str, ...] = ("text",)) -> list[bool]:
    rows = zip(*(batch[c] for c in columns), strict=True)
    return [all(bool(t) and not t.isspace() for t in row) for row in rows]


def _fingerprint(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:32]


def _to_columns(
    ds: Dataset, columns: dict[str, str], split: str, origin: str, text_columns: tuple[str, ...] = ("text",)
) -> Dataset:
    """Keep ``columns`` ({ours: theirs}) renamed to ours; ``text_columns`` (ours) as strings, rows blank in any dropped.

    DataError naming the available columns if one is missing, or if no row is left.
    """
    for ours, theirs in columns.items():
        if theirs not in ds.column_names:
            raise DataError(
                f"{ours.replace('_', ' ')} column {theirs!r} not found in {origin} (split {split!r}); "
                f"available columns: {', '.join(ds.column_names) or '(none)'}; set data.{ours}_column"
            )
    ds = ds.select_columns(list(columns.values()))
    renames = {theirs: ours for ours, theirs in columns.items() if theirs != ours}
    if renames:
        ds = ds.rename_columns(renames)
    for name in text_columns:
        feature = ds.features[name]
        if not (isinstance(feature, Value) and feature.dtype in ("string", "large_string")):
            if not isinstance(feature, Value):
                raise DataError(
                    f"{name.replace('_', ' ')} column {columns[name]!r} in {origin} (split {split!r}) holds "
                    f"{feature}, not text; set data.{name}_column to a column of strings"
                )
            ds = ds.cast_column(name, Value("string"))
    key = ("drop_blank",) if text_columns == ("text",) else ("drop_blank", *text_columns)
    ds = ds.filter(
        _not_blank,
        batched=True,
        fn_kwargs={"columns": text_columns},
        new_fingerprint=_fingerprint(ds._fingerprint, *key, _VERSION),
        desc=f"dropping blank rows ({split})",
    )
    if len(ds) == 0:
        raise DataError(f"split {split!r} from {origin} has no non-blank text rows")
    return ds


def _to_text_column(ds: Dataset, text_column: str, split: str, origin: str) -> Dataset:
    """Keep only ``text_column`` renamed to "text", as strings, without blank rows; DataError if nothing is left."""
    return _to_columns(ds, {"text": text_column}, split, origin)


VAL_SPLITS = ("random", "tail")


def _split_off_tail(train: Dataset, val_fraction: float) -> tuple[Dataset, Dataset]:
    """The last ``val_fraction`` of the text (by characters, cut at a row boundary) as validation, the rest as
    train: the standard split of a single running text (e.g. Tiny Shakespeare's first 90% / last 10%)."""
    lengths = np.asarray([len(t) for t in train.with_format("arrow")["text"].to_pylist()], dtype=np.int64)
    cut = int(np.searchsorted(np.cumsum(lengths), (1.0 - val_fraction) * lengths.sum(), side="right"))
    cut = min(max(cut, 1), len(train) - 1)
    return train.select(range(cut)), train.select(range(cut, len(train)))


def _split_off_validation(
    train: Dataset,
    val_fraction: float,
    seed: int,
    origin: str,
    stratify_by: str | None = None,
    val_split: str = "random",
) -> tuple[Dataset, Dataset]:
    """Hold out ``val_fraction`` of ``train``; with ``stratify_by`` (a column) each of its values in proportion
    where every value has enough rows, else a plain random split; ``val_split="tail"``: the end of the text."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    if len(train) < 2:
        raise DataError(
            f"train split from {origin} has {len(train)} row(s); need at least 2 to split off a validation set "
            f"(or give a validation split)"
        )
    check_choice("data.val_split", val_split, VAL_SPLITS)
    if val_split == "tail":
        return _split_off_tail(train, val_fraction)
    if stratify_by is not None:
        values = [str(v) for v in train.with_format("arrow")[stratify_by].to_pylist()]
        names = sorted(set(values))
        rows = Dataset.from_dict(
            {"row": list(range(len(values))), "value": values},
            features=Features({"row": Value("int64"), "value": ClassLabel(names=names)}),
        )
        try:  # split row numbers, not the data itself: the split selects from ``train`` without copying it
            parts = rows.train_test_split(test_size=val_fraction, seed=seed, stratify_by_column="value")
        except ValueError:  # a value with a single row, or more values than validation rows
            pass
        else:
            return train.select(parts["train"]["row"][:]), train.select(parts["test"]["row"][:])
    parts = train.train_test_split(test_size=val_fraction, seed=seed)
    return parts["train"], parts["test"]


def _resolve_files(
    files: dict[str, str | list[str] | None], file_format: str | None
) -> dict[str, tuple[list[str], str, str]]:
    """{split: (paths, format, origin)}: globs expanded, files checked, one format per split (given or inferred)."""
    files = {split: paths for split, paths in (files or {}).items() if paths is not None}  # None: not given
    if "train" not in files:
        raise ConfigError(f"data.train (the train file) is required; got splits: {', '.join(files) or '(none)'}")
    if file_format is not None:
        check_choice("data.format", file_format, FILE_FORMATS)
    resolved = {}
    for split, given in files.items():
        paths = _expand(split, given)
        origin = ", ".join(repr(p) for p in paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        resolved[split] = (paths, split_format(split, paths, file_format), origin)
    return resolved


@contextlib.contextmanager
def _local_only() -> Iterator[None]:
    """Reading local files must not ping the hub: datasets reports a download count on every load_dataset,
    which stalls for seconds on a machine without internet."""
    saved = datasets.config.HF_UPDATE_DOWNLOAD_COUNTS
    datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = False
    try:
        yield
    finally:
        datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = saved


def _read_split(
    split: str, paths: list[str], fmt: str, origin: str, cache_dir: str | Path | None, **builder_kwargs
) -> Dataset:
    """Load ``paths`` with the datasets builder for ``fmt`` (plus ``builder_kwargs``); DataError if unreadable."""
    builder, kwargs = _builder_args(fmt)
    # loaded under the name "train" whatever the split is called: datasets restricts split names, we do not
    try:
        with _local_only():
            return datasets.load_dataset(
                builder,
                data_files={"train": paths},
                split="train",
                cache_dir=None if cache_dir is None else str(cache_dir),
                **kwargs,
                **builder_kwargs,
            )
    except Exception as e:  # malformed user files surface as many exception types inside datasets
        cause = e.__cause__ or e
        if "corresponds to no data" in str(cause):  # datasets' message for a file with zero rows
            raise DataError(f"split {split!r} from {origin} has no rows") from e
        raise DataError(f"could not read {origin} as {fmt} (split {split!r}): {type(cause).__name__}: {cause}") from e


def _load_files(
    files: dict[str, str | list[str]],
    text_column: str,
    file_format: str | None,
    val_fraction: float,
    seed: int,
    cache_dir: str | Path | None,
    val_split: str = "random",
) -> DatasetDict:
    splits: dict[str, Dataset] = {}
    for split, (paths, fmt, origin) in _resolve_files(files, file_format).items():
        ds = _read_split(split, paths, fmt, origin, cache_dir)
        column = "text" if fmt == "text" else text_column  # the text builder always names its column "text"
        splits[split] = _to_text_column(ds, column, split, origin)
    if "validation" not in splits:
        origin = f"data.train ({files['train']!r})"
        splits["train"], splits["validation"] = _split_off_validation(
            splits["train"], val_fraction, seed, origin, val_split=val_split
        )
    return DatasetDict(splits)


def _hub_splits(
    hub_path: str | None, hub_subset: str | None, hub_splits: dict[str, str] | None, cache_dir: str | Path | None
) -> tuple[dict[str, tuple[Dataset, str]], str]:
    """({our split: (dataset, hub split name)}, origin) as picked by ``hub_splits``; "validation" only if present."""
    if not hub_path:
        raise ConfigError("data.source 'hub' needs data.path (a hub dataset name, e.g. 'wikitext')")
    origin = f"hub dataset {hub_path!r}" + (f" (subset {hub_subset!r})" if hub_subset else "")
    try:
        loaded = datasets.load_dataset(hub_path, hub_subset, cache_dir=None if cache_dir is None else str(cache_dir))
    except (datasets.exceptions.DatasetNotFoundError, FileNotFoundError, ConnectionError) as e:
        raise DataError(f"could not load {origin}: {e}") from e
    if isinstance(loaded, Dataset):
        loaded = DatasetDict({"train": loaded})
    wanted = {"train": "train", "validation": "validation", **(hub_splits or {})}  # {our split: hub split}
    wanted = {ours: theirs for ours, theirs in wanted.items() if theirs is not None}
    if wanted.get("validation") == "validation" and "validation" not in loaded:
        del wanted["validation"]  # the usual name is absent: hold out val_fraction of train
    for ours, theirs in wanted.items():
        if theirs not in loaded:
            raise DataError(
                f"{origin} has no split {theirs!r} (wanted for {ours!r}); available splits: {', '.join(loaded)}"
            )
    return {ours: (loaded[theirs], theirs) for ours, theirs in wanted.items()}, origin


def _load_hub(
    hub_path: str | None,
    hub_subset: str | None,
    hub_splits: dict[str, str] | None,
    text_column: str,
    val_fraction: float,
    seed: int,
    cache_dir: str | Path | None,
) -> DatasetDict:
    raw, origin = _hub_splits(hub_path, hub_subset, hub_splits, cache_dir)
    splits = {ours: _to_text_column(ds, text_column, theirs, origin) for ours, (ds, theirs) in raw.items()}
    if "validation" not in splits:
        splits["train"], splits["validation"] = _split_off_validation(splits["train"], val_fraction, seed, origin)
    return DatasetDict(splits)


def load_text_splits(
    kind: str,
    *,
    files: dict[str, str | list[str]] | None = None,
    hub_path: str | None = None,
    hub_subset: str | None = None,
    hub_splits: dict[str, str] | None = None,
    text_column: str = "text",
    file_format: str | None = None,
    val_fraction: float = 0.05,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    embedded_dir: Path | None = None,
    num_train_docs: int = 20000,
    num_val_docs: int = 1000,
    val_split: str = "random",
) -> DatasetDict:
    """Load raw text splits; always returns at least "train" and "validation", each with one "text" column.

    ``kind`` is one of:

    * "embedded": the toy corpus (``num_train_docs``/``num_val_docs`` documents) written once to
      ``embedded_dir``, default ``<cache_dir>/embedded``;
    * "files": ``files`` maps split -> path(s) or glob(s); the format comes from the extension unless
      ``file_format`` is given; for plain text the column is always "text" (one row per line);
    * "hub": ``datasets.load_dataset(hub_path, hub_subset)``, splits picked via ``hub_splits`` {ours: theirs}.

    Without a validation split (none given, or the hub dataset has none) ``val_fraction`` of train is held out
    with ``seed`` (``val_split="tail"``: the last ``val_fraction`` of a file's text instead, for running text). Blank
    rows are dropped. Extra splits (e.g. "test") are kept.
    """
    check_choice("data source kind", kind, SOURCE_KINDS)
    datasets.utils.logging.set_verbosity_warning()
    if kind == "embedded":
        directory = embedded_dir if embedded_dir is not None else default_embedded_dir(cache_dir)
        paths = write_embedded_corpus(Path(directory), num_train_docs, num_val_docs)
        files = {split: str(path) for split, path in paths.items()}
        return _load_files(files, "text", "text", val_fraction, seed, cache_dir)
    if kind == "files":
        if not files:
            raise ConfigError("data.source 'files' needs data.train (a path or list of paths)")
        return _load_files(files, text_column, file_format, val_fraction, seed, cache_dir, val_split)
    return _load_hub(hub_path, hub_subset, hub_splits, text_column, val_fraction, seed, cache_dir)
