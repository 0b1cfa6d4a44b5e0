"""Token shards: written once with a progress bar, read through memory maps in rows that may span shards,
sharded over ranks by the training sampler, resumed exactly mid-shard, and trained on through data=shards."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace

from attnfit.data.shards import TokenWindows, write_shards

WORDS = [f"w{i}" for i in range(40)]


def _tokenizer() -> Tokenizer:
    vocab = {"<pad>": 0, "<unk>": 1, "<bos>": 2, "<eos>": 3, "<mask>": 4, **{w: i + 5 for i, w in enumerate(WORDS)}}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = Whitespace()
    return tokenizer


def _documents(n: int) -> list[str]:
    return [" ".join(WORDS[(7 * d + j) % 40] for j in range(3 + d % 5)) for d in range(n)]


@pytest.fixture
def shards(tmp_path):
    out = tmp_path / "shards"
    write_shards(_documents(60), _tokenizer(), out, shard_tokens=50, batch_lines=7, progress=False)
    return out


def _stream() -> list[int]:
    tokenizer, ids = _tokenizer(), []
    for doc in _documents(60):
        ids += [*tokenizer.encode(doc).ids, 3]  # each document then <eos>
    return ids


def test_shards_round_trip_and_rows_span_shard_boundaries(shards):
    index = json.loads((shards / "index.json").read_text())
    stream = _stream()
    assert index["dtype"] == "uint16" and sum(s["tokens"] for s in index["shards"]) == len(stream)
    assert [s["tokens"] for s in index["shards"]][:-1] == [50] * (len(index["shards"]) - 1)
    on_disk = np.concatenate([np.fromfile(shards / s["file"], dtype=np.uint16) for s in index["shards"]])
    assert on_disk.tolist() == stream
    windows = TokenWindows(shards, seq_len=16)
    assert len(windows) == len(stream) // 16
    for i in range(len(windows)):  # rows 3, 6, 9 … cross from one shard into the next
        assert windows[i]["input_ids"] == stream[16 * i : 16 * (i + 1)]
    tail = TokenWindows(shards, 16, start=len(windows) - 2)
    assert len(tail) == 2 and tail[1]["input_ids"] == windows[len(windows) - 1]["input_ids"]


def test_rows_are_sharded_over_ranks_and_resume_exactly_mid_shard(shards):
    from attnfit.data import CLMCollator
    from attnfit.training.datamodule import KeyedDataset, ResumableLoader, ResumableSampler

    windows = KeyedDataset(TokenWindows(shards, seq_len=8))

    def loader(rank: int, progress=lambda: 0) -> ResumableLoader:
        sampler = ResumableSampler(windows, 2, rank, shuffle=True, seed=5)
        return ResumableLoader(windows, sampler=sampler, batch_size=3, collate_fn=CLMCollator(0), progress=progress)

    def rows(batches) -> list[tuple[int, ...]]:
        return [tuple(row.tolist()) for batch in batches for row in batch["input_ids"]]

    keys = [list(loader(rank).sampler) for rank in (0, 1)]
    assert not set(keys[0]) & set(keys[1])  # disjoint shards of the rows
    assert len(keys[0]) + len(keys[1]) == 2 * (len(windows) // 2)

    # Resume after 2 batches of rank 1 (mid-epoch, mid-shard): the rest of the epoch, exactly.
    first = loader(1)
    first.sampler.set_epoch(3)
    whole = rows(first)
    resumed = loader(1)
    resumed.load_state_dict({"epoch": 3, "batches": 2})
    assert rows(resumed) == whole[6:]


def test_training_reads_shards(run_cli, tmp_path, shards):
    run_dir = tmp_path / "run"
    run_cli(
        "train",
        "data=shards",
        f"data.path={shards}",
        "data.seq_len=16",
        "data.batch_size=4",
        "data.val_fraction=0.2",
        "model.dim=32",
        "encoder.num_layers=1",
        "attention.num_heads=2",
        "trainer.max_steps=3",
        "trainer.val_check_interval=3",
        "callbacks.progress_bar=none",
        f"hydra.run.dir={run_dir}",
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["step"] == 3 and "val/loss" in metrics
    assert (run_dir / "tokenizer.json").read_text() == (shards / "tokenizer.json").read_text()
