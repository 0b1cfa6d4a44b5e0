"""LightningModule for masked- and causal-LM pretraining."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from attnfit.models import LanguageModel, ModelConfig
from attnfit.pretrained import CHECKPOINT_KEY, checkpoint_metadata
from attnfit.training.optim import lightning_optimization


class LanguageModelingModule(L.LightningModule):
    """Wraps :class:`LanguageModel`; every constructor argument is plain data, saved as hyper-parameters."""

    def __init__(
        self,
        model: dict,
        optimizer: dict,
        scheduler: dict,
        total_steps: int,
        tokenizer_json: str = "",
        compile: bool = False,
        run_config: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["tokenizer_json", "run_config"], logger=False)
        self.model_config = ModelConfig.from_dict(model)
        self.model = LanguageModel(self.model_config)
        self.tokenizer_json, self.run_config = tokenizer_json, run_config
        if compile:
            self.model.backbone.compile()  # in place: the module tree (and checkpoint keys) stay the same

    @property
    def task(self) -> str:
        return "clm" if self.model_config.causal else "mlm"

    def forward(self, input_ids: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        return self.model(input_ids, padding_mask)

    def _step(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        """Loss, correct predictions and labelled-token count for one batch."""
        hidden = self.model.backbone(batch["input_ids"], batch["padding_mask"])[0]  # heads run below
        labels = batch["labels"]
        if self.model_config.causal:
            hidden, labels = hidden[:, :-1], labels[:, 1:]  # position t predicts token t + 1
        else:
            # Only masked positions (~15%) have labels: skip the vocabulary projection everywhere else.
            selected = labels != -100
            hidden, labels = hidden[selected], labels[selected]
        logits = self.model.head(hidden)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)
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
        self.log("train/lr", self.optimizers().param_groups[0]["lr"])
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

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        return lightning_optimization(self.model, hp.optimizer, hp.scheduler, hp.total_steps)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = checkpoint_metadata(
            self.task, self.model_config.to_dict(), self.tokenizer_json, run_config=self.run_config
        )
