"""A LightningDataModule over already tokenized splits: loading and tokenizing happen before it, once."""

from __future__ import annotations

from collections.abc import Callable, Iterator

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

    def _loader(self, dataset: Dataset, collator: Callable, shuffle: bool, train: bool = False) -> DataLoader:
        loader_cls = DataLoader if train else RepeatableLoader
        sampler = None
        trainer = getattr(self, "trainer", None)  # set once Lightning attaches this module to a Trainer
        if trainer is not None and trainer.world_size > 1:
            # Our own sampler: Lightning's injected one always shuffles training data, which would ignore
            # data.shuffle=false and make a DDP run impossible to compare with a single-process one.
            sampler = DistributedSampler(
                dataset,
                num_replicas=trainer.world_size,
                rank=trainer.global_rank,
                shuffle=shuffle,
                seed=self.seed,
                drop_last=train,
            )
        return loader_cls(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle if sampler is None else None,
            sampler=sampler,
            collate_fn=collator,
            num_workers=self.num_workers,
            persistent_workers=train and self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            drop_last=train and len(dataset) > self.batch_size,
            generator=torch.Generator().manual_seed(self.seed) if shuffle and sampler is None else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train, self.train_collator, shuffle=self.shuffle_train, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.validation, self.val_collator, shuffle=False)

    def loader_for(self, split: str) -> DataLoader:
        """An evaluation loader (no shuffling) over ``split``: train, validation or test."""
        dataset = {"train": self.train, "validation": self.validation, "test": self.test}[split]
        if dataset is None:
            raise ValueError(f"this data has no {split} split")
        return self._loader(dataset, self.val_collator, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        if self.test is None:
            raise ValueError("this data has no test split")
        return self._loader(self.test, self.val_collator, shuffle=False)
