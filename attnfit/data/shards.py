"""Token shards: a corpus tokenized once into fixed-dtype binary files, read through memory maps.

For corpora that do not fit in memory or in the ``datasets`` cache. The prepare step streams text line by line,
tokenizes it in batches (documents joined with ``<eos>``, as packing does) and appends the ids to
``shard-NNNNN.bin`` files of at most ``shard_tokens`` tokens each, with a progress bar; ``index.json`` records the
dtype, each shard's length and the tokenizer (``tokenizer.json`` beside it)::

    python -m attnfit.data.shards --tokenizer RUN_DIR/tokenizer.json --out shards/ corpus-*.txt
    attnfit-train data=shards data.path=shards/

Training reads :class:`TokenWindows`: row ``i`` is tokens ``i·seq_len … (i+1)·seq_len - 1`` of the concatenated
shards, read from the memory maps when asked for (a row may span two shards). Nothing is loaded up front, so
resident memory does not grow with the corpus. It is an ordinary map-style dataset, so the training loader's
sampler shards the rows over ranks and saves its position in checkpoints: resuming mid-shard is exact.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from attnfit.errors import DataError

INDEX = "index.json"
TOKENIZER = "tokenizer.json"


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def write_shards(
    texts: Iterable[str],
    tokenizer: Any,
    out: str | Path,
    shard_tokens: int = 100_000_000,
    batch_lines: int = 1000,
    progress: bool = True,
) -> dict[str, Any]:
    """Tokenize ``texts`` (one document each) into shards under ``out``; returns the index written there."""
    from rich.progress import BarColumn, Progress, TextColumn

    from attnfit.data import special_token_id

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("shard-*.bin"):  # a rewrite must not append to an earlier run's shards
        old.unlink()
    dtype = token_dtype(tokenizer.get_vocab_size())
    eos = special_token_id(tokenizer, "eos")
    shards: list[dict[str, Any]] = []

    def append(ids: np.ndarray) -> None:
        while len(ids):
            if not shards or shards[-1]["tokens"] == shard_tokens:
                shards.append({"file": f"shard-{len(shards):05d}.bin", "tokens": 0})
            take = ids[: shard_tokens - shards[-1]["tokens"]]
            with open(out / shards[-1]["file"], "ab") as f:  # appended batch by batch: memory stays one batch
                f.write(take.tobytes())
            shards[-1]["tokens"] += len(take)
            ids = ids[len(take) :]

    columns = [TextColumn("tokenizing into shards"), BarColumn(), TextColumn("{task.completed:,.0f} tokens")]
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task("shards", total=None)
        for batch in _batches(texts, batch_lines):
            encodings = tokenizer.encode_batch(batch, add_special_tokens=False)
            documents = ([*e.ids, eos] for e in encodings if e.ids)  # each document, then <eos>
            ids = np.fromiter(itertools.chain.from_iterable(documents), dtype=dtype)
            append(ids)
            bar.advance(task, len(ids))
    index = {"dtype": dtype.name, "vocab_size": tokenizer.get_vocab_size(), "shards": shards}
    (out / TOKENIZER).write_text(tokenizer.to_str())
    (out / INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return index


def _batches(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in texts:
        if text.strip():
            batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class TokenWindows:
    """Rows of ``seq_len`` consecutive tokens over the shards of ``directory`` (the last partial row dropped);
    ``start``/``stop`` restrict it to a range of rows (a validation split)."""

    def __init__(self, directory: str | Path, seq_len: int, start: int = 0, stop: int | None = None) -> None:
        directory = Path(directory)
        if not (directory / INDEX).is_file():
            raise DataError(f"{directory} holds no token shards (no {INDEX}); write them with python -m {__name__}")
        index = json.loads((directory / INDEX).read_text())
        self.dtype = np.dtype(index["dtype"])
        self.maps = [np.memmap(directory / s["file"], dtype=self.dtype, mode="r") for s in index["shards"]]
        self.offsets = np.cumsum([0] + [len(m) for m in self.maps]).tolist()  # first token of each shard
        self.seq_len = seq_len
        rows = self.offsets[-1] // seq_len
        self.start, self.stop = start, rows if stop is None else min(stop, rows)

    @property
    def num_tokens(self) -> int:
        return self.offsets[-1]

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def tokens(self, begin: int, end: int) -> np.ndarray:
        """Tokens ``begin … end-1`` of the concatenated shards."""
        parts, position = [], begin
        shard = bisect.bisect_right(self.offsets, begin) - 1
        while position < end:
            low = self.offsets[shard]
            piece = self.maps[shard][position - low : min(end, self.offsets[shard + 1]) - low]
            parts.append(piece)
            position += len(piece)
            shard += 1
        return np.concatenate(parts) if len(parts) > 1 else np.asarray(parts[0])

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        begin = (self.start + index) * self.seq_len
        return {"input_ids": self.tokens(begin, begin + self.seq_len).astype(np.int64).tolist()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="text files, one document per line")
    parser.add_argument("--tokenizer", required=True, help="a tokenizer.json (e.g. a run directory's)")
    parser.add_argument("--out", required=True, help="the shard directory to write")
    parser.add_argument("--shard-tokens", type=int, default=100_000_000)
    args = parser.parse_args(argv)
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(args.tokenizer)

    def lines() -> Iterator[str]:
        for name in args.files:
            with open(name, encoding="utf-8") as f:
                yield from f

    index = write_shards(lines(), tokenizer, args.out, args.shard_tokens)
    total = sum(s["tokens"] for s in index["shards"])
    print(f"{total:,} tokens in {len(index['shards'])} shard(s) of {index['dtype']} under {args.out}")


if __name__ == "__main__":
    main()
