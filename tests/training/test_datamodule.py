"""The DataModule's loaders."""

import torch
from torch.utils.data import DataLoader

from attnfit.data.lm import MLMCollator
from attnfit.training.datamodule import RepeatableLoader


def test_repeat_masks_gives_identical_validation_passes():
    rows = [{"input_ids": list(range(7, 47))} for _ in range(16)]
    collator = MLMCollator(0, 4, 60, (0, 1, 2, 3, 4, 5, 6), seed=3, repeat_masks=True)
    for workers in (0, 2):
        loader = RepeatableLoader(rows, batch_size=4, collate_fn=collator, num_workers=workers)
        first, second = [b["labels"] for b in loader], [b["labels"] for b in loader]
        assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    plain = DataLoader(rows, batch_size=4, collate_fn=MLMCollator(0, 4, 60, (0, 1, 2, 3, 4, 5, 6), seed=3))
    first, second = [b["labels"] for b in plain], [b["labels"] for b in plain]
    assert not all(torch.equal(a, b) for a, b in zip(first, second, strict=True))  # training masks do change


def _score_shard(rank: int, world: int, port: int, rows: int, out: str) -> None:
    """One DDP rank: read its evaluation shard, then gather every rank's rows as the QA/seq2seq modules do."""
    import json
    import os

    import torch.distributed as dist

    from attnfit.training.datamodule import ShardSampler
    from attnfit.training.module import gather_objects

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        mine = list(ShardSampler(list(range(rows)), world, rank))
        gathered = gather_objects(mine)
        if rank == 0:
            with open(out, "w") as f:
                json.dump(gathered, f)
    finally:
        dist.destroy_process_group()


def test_corpus_metrics_under_ddp_score_every_row_exactly_once(tmp_path):
    """Two gloo processes over 7 rows: the shards are disjoint, cover the set, and every rank gathers all of them
    (DistributedSampler would repeat a row to even the shards out, and rank zero alone would see half)."""
    import json
    import socket

    import torch.multiprocessing as mp

    from attnfit.training.module import gather_objects

    assert gather_objects("alone") == ["alone"]  # no process group: the value itself
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "gathered.json"
    mp.start_processes(_score_shard, args=(2, port, 7, str(out)), nprocs=2, start_method="fork")
    gathered = json.loads(out.read_text())
    assert gathered == [[0, 2, 4, 6], [1, 3, 5]]
    assert sorted(i for shard in gathered for i in shard) == list(range(7))


def test_data_seed_changes_the_training_order_alone():
    """``data_seed`` shuffles the training rows by itself (a soup's members share ``seed``, their initial weights);
    unset, ``seed`` does, so earlier runs repeat; validation keeps its order."""
    from omegaconf import OmegaConf

    from attnfit.tasks.base import datamodule_for

    rows = [{"input_ids": [i]} for i in range(64)]

    def orders(**seeds: int | None) -> tuple[list[int], list[int]]:
        cfg = OmegaConf.create({"data": {"batch_size": 8, "num_workers": 0}, **seeds})
        module = datamodule_for(
            cfg, {"train": rows, "validation": rows}, lambda batch: [r["input_ids"][0] for r in batch]
        )
        return [i for b in module.train_dataloader() for i in b], [i for b in module.val_dataloader() for i in b]

    train, validation = orders(seed=1, data_seed=None)
    assert orders(seed=1) == (train, validation) == orders(seed=7, data_seed=1)
    other_train, other_validation = orders(seed=1, data_seed=2)
    assert other_train != train and sorted(other_train) == sorted(train) and other_validation == validation
