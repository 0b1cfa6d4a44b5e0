"""A LightningDataModule over already tokenized splits: loading and tokenizing happen before it, once.

Training data order is a pure function of (seed, epoch, position), and the training loader's state (epoch and
batches consumed) is saved in every checkpoint, so a run resumed mid-epoch sees exactly the batches, in the
order and with the MLM masks, that the uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


class RepeatableLoader(DataLoader):
    """Restarts its collator's randomness on every pass, so each evaluation scores the same MLM masks."""

    def __iter__(self) -> Iterator:
        reset = getattr(self.collate_fn, "reset", None)
        if reset is not None:
            reset()
        return super().__iter__()


class ResumableSampler(DistributedSampler):
    """Seeded per-epoch order (``seed + epoch``), sharded over ranks, that can start part-way into an epoch.

    It yields *sample keys* ``epoch · N + index`` rather than indices: :class:`KeyedDataset` turns them back
    into rows and hands the key to the collator, which seeds its randomness (MLM masks) from it. Subclassing
    ``DistributedSampler`` tells Lightning not to inject its own (which would always shuffle).
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, shuffle: bool, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        self.skip = 0  # samples of this rank to skip on the next pass (set when resuming)

    def __iter__(self) -> Iterator[int]:
        order = list(super().__iter__())[self.skip :]
        self.skip = 0
        n = len(self.dataset)
        return iter([self.epoch * n + i for i in order])


class KeyedDataset(Dataset):
    """Rows of ``dataset`` addressed by sample key (``epoch · N + index``), each carrying its ``sample_key``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int) -> dict:
        return {**self.dataset[key % len(self.dataset)], "sample_key": key}

    def __getitems__(self, keys: list[int]) -> list[dict]:
        n = len(self.dataset)
        getitems = getattr(self.dataset, "__getitems__", None)
        rows = getitems([k % n for k in keys]) if getitems else [self.dataset[k % n] for k in keys]
        return [{**row, "sample_key": k} for row, k in zip(rows, keys, strict=True)]


class ResumableLoader(DataLoader):
    """The training loader. Lightning saves :meth:`state_dict` in checkpoints and calls :meth:`load_state_dict`
    before iterating when it resumes (its ``_Stateful`` protocol); ``progress`` reports the batches consumed this
    epoch as the Trainer counts them, which excludes the batch its fetcher has already prefetched."""

    # The epoch is the sampler's (set by Lightning when the epoch began): at the end of a run stopped by
    # max_steps the Trainer already counts the unfinished epoch as done.

    def __init__(self, *args: Any, progress: Callable[[], int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.progress = progress

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(getattr(self.sampler, "epoch", 0)), "batches": self.progress()}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if not isinstance(self.sampler, ResumableSampler):  # replaced by Lightning, e.g. for overfit_batches
            return
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if batches >= len(self):  # saved at the end of an epoch: the next one starts afresh
            epoch, batches = epoch + 1, 0
        self.sampler.set_epoch(epoch)
        self.sampler.skip = batches * int(self.batch_size)


class ShardSampler(DistributedSampler):
    """Evaluation order sharded over ranks without padding: rank r reads rows r, r + W, r + 2W, … Each row is
    scored exactly once (``DistributedSampler`` repeats rows to even the shards out, which would count them
    twice in corpus-level metrics); ranks may get one batch more or less than others.

    It subclasses ``DistributedSampler`` only so that Lightning keeps it: any other sampler of an evaluation
    loader gets wrapped in Lightning's ``DistributedSamplerWrapper``, which shards the shard again (rank zero
    then scored rows 0, 2W, 4W, … and half the set went unscored)."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.indices = range(rank, len(dataset), num_replicas)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class TokenizedDataModule(L.LightningDataModule):
    """Train/validation(/test) loaders with the task's collators; shuffling is seeded so runs repeat."""

    def __init__(
        self,
        train: Dataset,
        validation: Dataset,
        train_collator: Callable,
        val_collator: Callable,
        batch_size: int,
        num_workers: int = 0,
        seed: int = 0,
        test: Dataset | None = None,
        shuffle: bool = True,
    ) -> None:
        super().__init__()
        self.shuffle_train = shuffle
        self.train, self.validation, self.test = train, validation, test
        self.train_collator, self.val_collator = train_collator, val_collator
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed

    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)  # set once Lightning attaches this module to a Trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def _progress(self) -> int:
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def _common(self, collator: Callable) -> dict[str, Any]:
        # An explicit generator everywhere: creating an iterator must not draw from torch's global RNG, whose
        # state (dropout) a resumed run restores and must see unchanged.
        return dict(
            batch_size=self.batch_size,
            collate_fn=collator,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        world_size, rank = self._world()
        dataset = KeyedDataset(self.train)
        sampler = ResumableSampler(dataset, world_size, rank, self.shuffle_train, self.seed)
        return ResumableLoader(
            dataset,
            sampler=sampler,
            drop_last=len(sampler) > self.batch_size,
            persistent_workers=self.num_workers > 0,
            progress=self._progress,
            **self._common(self.train_collator),
        )

    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        world_size, rank = self._world()
        sampler = None
        if world_size > 1:  # every rank needs a row, or its epoch-end collectives would wait forever
            shard = len(dataset) >= world_size
            sampler = (
                ShardSampler(dataset, world_size, rank) if shard else DistributedSampler(dataset, world_size, rank)
            )
        return RepeatableLoader(dataset, sampler=sampler, **self._common(self.val_collator))

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.validation)

    def loader_for(self, split: str) -> DataLoader:
        """An evaluation loader (no shuffling) over ``split``: train, validation or test."""
        dataset = {"train": self.train, "validation": self.validation, "test": self.test}[split]
        if dataset is None:
            raise ValueError(f"this data has no {split} split")
        return self._eval_loader(dataset)

    def test_dataloader(self) -> DataLoader:
        if self.test is None:
            raise ValueError("this data has no test split")
        return self._eval_loader(self.test)
