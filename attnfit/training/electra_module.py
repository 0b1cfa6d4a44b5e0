"""LightningModule for ELECTRA pretraining: generator MLM loss + λ · replaced-token detection."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from attnfit.training.module import TaskModule


class ElectraModule(TaskModule):
    """Generator MLM loss + λ · discriminator BCE; validation samples replacements from a fixed seed."""

    def forward(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> Any:
        return self.model(batch["input_ids"], batch["padding_mask"], batch["labels"], generator=generator)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        out = self(batch)
        self.log("train/loss", out.loss)
        self.log("loss", out.loss, prog_bar=True, logger=False)
        self.log("train/generator_loss", out.generator_loss)
        self.log("train/discriminator_loss", out.discriminator_loss)
        self.log("train/discriminator_acc", out.disc_accuracy)
        self.log_learning_rate()
        return out.loss

    def on_validation_epoch_start(self) -> None:
        self._sampler = torch.Generator(device=self.device).manual_seed(0)  # the same replacements every pass
        self._sums = torch.zeros(4, dtype=torch.float64, device=self.device)  # loss, gen, disc, acc (· batches)
        self._batches = 0

    on_test_epoch_start = on_validation_epoch_start

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        out = self(batch, generator=self._sampler)
        parts = (out.loss, out.generator_loss, out.discriminator_loss, out.disc_accuracy)
        self._sums += torch.stack([p.detach().double() for p in parts])
        self._batches += 1

    test_step = validation_step

    def _log_epoch(self, split: str) -> None:
        mean = (self._sums / max(1, self._batches)).float()
        names = ("loss", "generator_loss", "discriminator_loss", "discriminator_acc")
        for value, name in zip(mean, names, strict=True):
            self.log(f"{split}/{name}", value)
        if split == "val":
            self.log("val_loss", mean[0], prog_bar=True, logger=False)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
