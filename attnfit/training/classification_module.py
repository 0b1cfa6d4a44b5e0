"""LightningModule for fine-tuning a pretrained backbone as a sequence classifier."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from attnfit.errors import ConfigError
from attnfit.models import ModelConfig
from attnfit.models.classifier import ClassifierConfig, SequenceClassifier
from attnfit.models.finetuning import LoadReport, freeze_bottom, layer_groups, load_pretrained_backbone
from attnfit.models.lora import apply_lora
from attnfit.pretrained import CHECKPOINT_KEY, checkpoint_metadata
from attnfit.training.optim import build_optimizer, build_scheduler, layerwise_groups


class ClassificationModule(L.LightningModule):
    """A :class:`SequenceClassifier` with the fine-tuning controls of ``finetune`` (see configs/finetune.yaml).

    ``backbone_state`` (pretrained weights) is loaded before LoRA wraps any layer, so its keys always match.
    """

    def __init__(
        self,
        model: dict,
        classifier: dict,
        label_names: list[str],
        optimizer: dict,
        scheduler: dict,
        total_steps: int,
        finetune: dict,
        class_weights: list[float] | None = None,
        tokenizer_json: str = "",
        run_config: dict | None = None,
        backbone_state: dict[str, Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["tokenizer_json", "run_config", "backbone_state"], logger=False)
        self.model_config = ModelConfig.from_dict(model)
        self.classifier_config = ClassifierConfig.from_dict(classifier)
        self.model = SequenceClassifier(self.model_config, self.classifier_config)
        self.label_names, self.tokenizer_json, self.run_config = list(label_names), tokenizer_json, run_config
        self.load_report: LoadReport | None = None
        if backbone_state is not None:
            self.load_report = load_pretrained_backbone(self.model, backbone_state)

        lora = finetune.get("lora") or {}
        self.lora = None
        if lora.get("enabled"):
            if finetune.get("gradual_unfreeze_every"):
                raise ConfigError("finetune.gradual_unfreeze_every cannot be combined with finetune.lora.enabled=true")
            self.lora = {k: v for k, v in lora.items() if k != "enabled"}
            apply_lora(self.model.backbone, **self.lora)
        freeze_bottom(
            self.model.backbone, bool(finetune.get("freeze_embeddings")), int(finetune.get("freeze_layers", 0))
        )
        self.layers = layer_groups(self.model.backbone)
        self.fixed = {id(p) for p in self.model.backbone.parameters() if not p.requires_grad}  # never unfrozen
        self.unfreeze_every = finetune.get("gradual_unfreeze_every")
        if self.unfreeze_every is not None and int(self.unfreeze_every) < 1:
            raise ConfigError(f"finetune.gradual_unfreeze_every={self.unfreeze_every} must be ≥ 1 (or null)")

        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)
        num = len(label_names)
        metrics = MetricCollection(
            {"acc": MulticlassAccuracy(num, average="micro"), "f1": MulticlassF1Score(num, average="macro")}
        )
        self.val_metrics, self.test_metrics = metrics.clone(prefix="val/"), metrics.clone(prefix="test/")

    def forward(self, input_ids: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        return self.model(input_ids, padding_mask).logits

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def _loss(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        logits = self(batch["input_ids"], batch["padding_mask"])
        return F.cross_entropy(logits.float(), batch["labels"], weight=self.class_weights), logits

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.unfreeze_every:  # ULMFiT: the top layer first, one more every N steps
            unfrozen = 1 + self.global_step // int(self.unfreeze_every)
            for depth, params in enumerate(reversed(self.layers)):
                for p in params:
                    if id(p) not in self.fixed:
                        p.requires_grad_(depth < unfrozen)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss, logits = self._loss(batch)
        self.log("train/loss", loss)
        self.log("loss", loss, prog_bar=True, logger=False)
        self.log("train/acc", (logits.argmax(-1) == batch["labels"]).float().mean())
        return loss

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

    def configure_optimizers(self) -> dict[str, Any]:
        opt, ft = dict(self.hparams.optimizer), self.hparams.finetune
        head = [p for name, p in self.model.named_parameters() if not name.startswith("backbone.")]
        # Permanently frozen parameters are left out; those gradual unfreezing will turn on stay in, and AdamW
        # skips them while their gradient is None, so they do not change before then (weight decay included).
        layers = [[p for p in group if id(p) not in self.fixed] for group in self.layers]
        groups = layerwise_groups(
            self.model,
            layers,
            head,
            opt["lr"],
            opt.pop("weight_decay", 0.01),
            float(ft.get("layer_lr_decay", 1.0)),
            ft.get("head_lr"),
        )
        optimizer = build_optimizer(groups, **opt)
        sched = dict(self.hparams.scheduler)
        scheduler = build_scheduler(optimizer, sched.pop("name"), self.hparams.total_steps, **sched)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = checkpoint_metadata(
            "classification",
            self.model_config.to_dict(),
            self.tokenizer_json,
            classifier_config=self.classifier_config.to_dict(),
            label_names=self.label_names,
            lora=self.lora,
            run_config=self.run_config,
        )
