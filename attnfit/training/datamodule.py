"""A LightningDataModule over already tokenized splits: loading and tokenizing happen before it, once."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset


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
    ) -> None:
        super().__init__()
        self.train, self.validation, self.test = train, validation, test
        self.train_collator, self.val_collator = train_collator, val_collator
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed

    def _loader(self, dataset: Dataset, collator: Callable, shuffle: bool) -> DataLoader:
        loader_cls = DataLoader if shuffle else RepeatableLoader
        return loader_cls(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            collate_fn=collator,
            num_workers=self.num_workers,
            persistent_workers=shuffle and self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            drop_last=shuffle and len(dataset) > self.batch_size,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train, self.train_collator, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.validation, self.val_collator, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        if self.test is None:
            raise ValueError("this data has no test split")
        return self._loader(self.test, self.val_collator, shuffle=False)
