"""LightningModule for sequence classification (fine-tuned or from scratch)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from attnfit.models.classifier import SequenceClassifier
from attnfit.models.language_model import LanguageModel
from attnfit.pretrained import ModelRecord
from attnfit.training.module import Optimization, TaskModule


@dataclass
class ClassificationLoss:
    """The loss settings: ``class_weights`` weigh every split's cross-entropy; ``label_smoothing`` softens the
    training targets only (``val/loss`` and ``test/loss`` stay plain, so runs that differ in it compare);
    ``mlm_weight`` scales the auxiliary masked-LM loss that joins the training loss; ``adversarial_eps`` > 0 adds
    the loss again on embeddings moved that far along its gradient (:func:`adversarial_loss`)."""

    class_weights: list[float] | None = None
    label_smoothing: float = 0.0
    mlm_weight: float = 0.0
    adversarial_eps: float = 0.0


def adversarial_loss(
    model: SequenceClassifier, batch: dict[str, Any], loss_of: Callable[[Tensor], Tensor], eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Adversarial training on embeddings (Miyato et al. 2017, FGM): ``(clean loss, logits, adversarial loss)``.

    The adversarial loss is the loss again with the embedding layer's output ``e (B, T, D)`` moved by
    ``r = eps · g / ‖g‖`` (L2 over each example's T × D), ``g`` the clean loss's gradient at ``e``: the worst
    small change of the inputs to first order. ``r`` is a constant; both losses train the model."""
    embeddings = model.backbone.embeddings
    captured: list[Tensor] = []

    def capture(module: Any, args: Any, output: Tensor) -> Tensor:
        if not output.requires_grad:  # frozen embeddings: the gradient at e is still wanted
            output = output.detach().requires_grad_()
        captured.append(output)
        return output

    handle = embeddings.register_forward_hook(capture)
    try:
        logits = model(batch["input_ids"], batch["padding_mask"]).logits  # (B, C)
    finally:
        handle.remove()
    clean = loss_of(logits)
    (grad,) = torch.autograd.grad(clean, captured[0], retain_graph=True)  # (B, T, D)
    norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]  # (B, 1, 1)
    shift = (eps * grad / norms).detach()
    handle = embeddings.register_forward_hook(lambda module, args, output: output + shift)
    try:
        adversarial = loss_of(model(batch["input_ids"], batch["padding_mask"]).logits)
    finally:
        handle.remove()
    return clean, logits, adversarial


class ClassificationModule(TaskModule):
    """Cross-entropy (see :class:`ClassificationLoss`) on a :class:`SequenceClassifier`; accuracy and macro-F1.

    Fine-tuning surgery (LoRA, freezing, layer-wise LR, gradual unfreezing) is applied to the model before it
    gets here (:func:`attnfit.models.prepare_for_finetuning`). ``auxiliary``: a masked LM sharing the model's
    backbone (:func:`attnfit.models.auxiliary_mlm`), whose loss on the batch's masked copy joins the training loss
    times ``loss.mlm_weight``; it is not part of the saved model."""

    model: SequenceClassifier

    def __init__(
        self,
        model: SequenceClassifier,
        record: ModelRecord,
        optimization: Optimization | None = None,
        loss: ClassificationLoss | None = None,
        auxiliary: LanguageModel | None = None,
    ) -> None:
        super().__init__(model, record, optimization)
        loss = loss or ClassificationLoss()
        self.auxiliary, self.loss_settings = auxiliary, loss
        self.label_names = list(record.label_names or [])
        weights = torch.tensor(loss.class_weights, dtype=torch.float32) if loss.class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)
        num = len(self.label_names)
        metrics = MetricCollection(
            {"acc": MulticlassAccuracy(num, average="micro"), "f1": MulticlassF1Score(num, average="macro")}
        )
        self.val_metrics, self.test_metrics = metrics.clone(prefix="val/"), metrics.clone(prefix="test/")

    def forward(self, input_ids: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        return self.model(input_ids, padding_mask).logits

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def _cross_entropy(self, logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
        return F.cross_entropy(logits.float(), labels, self.class_weights, label_smoothing=label_smoothing)

    def _loss(self, batch: dict[str, Any], label_smoothing: float = 0.0) -> tuple[Tensor, Tensor]:
        logits = self(batch["input_ids"], batch["padding_mask"])
        return self._cross_entropy(logits, batch["labels"], label_smoothing), logits

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        smoothing, eps = self.loss_settings.label_smoothing, self.loss_settings.adversarial_eps
        if eps > 0:
            loss_of = partial(self._cross_entropy, labels=batch["labels"], label_smoothing=smoothing)
            loss, logits, adversarial = adversarial_loss(self.model, batch, loss_of, eps)
            self.log("train/adversarial_loss", adversarial)
        else:
            (loss, logits), adversarial = self._loss(batch, smoothing), None
        self.log("train/loss", loss)
        self.log("loss", loss, prog_bar=True, logger=False)
        self.log("train/acc", (logits.argmax(-1) == batch["labels"]).float().mean())
        if self.auxiliary is not None:
            ids, labels = batch["masked_input_ids"], batch["masked_labels"]
            masked_loss = self.auxiliary.labelled_loss(ids, batch["padding_mask"], labels)[0]
            self.log("train/mlm_loss", masked_loss)
            loss = loss + self.loss_settings.mlm_weight * masked_loss
        return loss if adversarial is None else loss + adversarial

    def _eval_step(self, batch: dict[str, Any], metrics: MetricCollection, split: str) -> None:
        loss, logits = self._loss(batch)
        metrics.update(logits.argmax(-1), batch["labels"])
        self.log(f"{split}/loss", loss, batch_size=batch["labels"].shape[0])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, "test")

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.log_dict(values)
        self.log("val_f1", values["val/f1"], prog_bar=True, logger=False)
        self.val_metrics.reset()

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute())
        self.test_metrics.reset()
