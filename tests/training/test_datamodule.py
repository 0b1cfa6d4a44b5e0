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
