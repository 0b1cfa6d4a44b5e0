"""LightningModule for masked- and causal-LM pretraining."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from attnfit.models import LanguageModel
from attnfit.pretrained import ModelRecord
from attnfit.training.module import Optimization, TaskModule


class LanguageModelingModule(TaskModule):
    """Wraps a :class:`LanguageModel`; the loss is the model's own (:meth:`LanguageModel.labelled_loss`)."""

    model: LanguageModel

    def __init__(self, model: LanguageModel, record: ModelRecord, optimization: Optimization | None = None) -> None:
        super().__init__(model, record, optimization)
        self.model_config = model.config

    def forward(self, input_ids: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        return self.model(input_ids, padding_mask)

    def _step(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        """Loss, correct predictions and labelled-token count for one batch."""
        loss, logits, labels = self.model.labelled_loss(batch["input_ids"], batch["padding_mask"], batch["labels"])
        if self.training:  # accuracy is an evaluation metric: skip the argmax over the vocabulary here
            return loss, loss.new_zeros(()), loss.new_zeros(())
        labelled = labels != -100
        correct = (logits.argmax(-1) == labels) & labelled
        return loss, correct.sum(), labelled.sum()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss, _, _ = self._step(batch)
        self.log("train/loss", loss)
        self.log("loss", loss, prog_bar=True, logger=False)
        self.log("train/ppl", torch.exp(loss.detach().clamp(max=50)))
        self.log_learning_rate()
        return loss

    # Validation and test accumulate token-weighted sums, so the epoch loss is exact whatever the batch sizes.
    def on_validation_epoch_start(self) -> None:
        self._sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss·n, correct, n

    on_test_epoch_start = on_validation_epoch_start

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss, correct, count = self._step(batch)
        self._sums += torch.stack([loss.double() * count, correct.double(), count.double()])

    test_step = validation_step

    def _log_epoch(self, split: str) -> None:
        total = self.trainer.strategy.reduce(self._sums, reduce_op="sum")  # across ranks
        loss = (total[0] / total[2].clamp(min=1)).float()
        self.log(f"{split}/loss", loss)
        self.log(f"{split}/ppl", torch.exp(loss.clamp(max=50)))
        self.log(f"{split}/acc", (total[1] / total[2].clamp(min=1)).float())
        if split == "val":
            self.log("val_loss", loss, prog_bar=True, logger=False)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
