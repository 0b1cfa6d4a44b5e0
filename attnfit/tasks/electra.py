"""ELECTRA pretraining (``task=electra``): replaced-token detection. The data and masking are the masked LM's;
the discriminator (``model.backbone``) is what ``attnfit-finetune pretrained=RUN`` starts from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from attnfit.pretrained import Artifact, ModelRecord
from attnfit.recipes.common import container, run_config
from attnfit.tasks.base import Prepared
from attnfit.tasks.language_modeling import LanguageModeling
from attnfit.training.module import Optimization, TaskModule

HEAD_KEYS = ("generator_dim_ratio", "generator_layers", "discriminator_weight", "temperature")


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


class Electra(LanguageModeling):
    name = "electra"

    def check(self, cfg: DictConfig, pretrained: Artifact | None) -> None:
        from attnfit.models.electra import ElectraConfig

        super().check(cfg, pretrained)
        ElectraConfig.from_dict(self._head(cfg))

    def _head(self, cfg: DictConfig) -> dict[str, Any]:
        return {key: cfg.task[key] for key in HEAD_KEYS if key in cfg.task}

    def build_module(self, cfg: DictConfig, prepared: Prepared, total_steps: int, pretrained: Artifact | None) -> Any:
        from attnfit.models import ModelConfig, load_pretrained_backbone
        from attnfit.models.electra import ElectraConfig, ElectraModel

        config = ModelConfig.from_dict(self._model_config(cfg, prepared, pretrained))
        head = ElectraConfig.from_dict(self._head(cfg))
        model = ElectraModel(config, head)
        if pretrained is not None:  # the discriminator continues a pretrained backbone
            load_pretrained_backbone(model, pretrained.state_dict, source=str(pretrained.source))
        record = ModelRecord(
            self.name,
            config.to_dict(),
            prepared.tokenizer.to_str(),
            head_config=head.to_dict(),
            run_config=run_config(cfg),
        )
        optimization = Optimization(container(cfg.optimizer), container(cfg.scheduler), total_steps)
        return ElectraModule(model, record, optimization)

    def summarise(self, metrics: dict[str, float], module: Any, prepared: Prepared) -> list[str]:
        shown = [f"{k} {metrics[k]:.4f}" for k in ("val/generator_loss", "val/discriminator_acc") if k in metrics]
        return [
            "  ".join(shown) + f"  (unigram baseline {metrics.get('unigram_baseline', float('nan')):.3f} nats/token)"
        ]

    def next_steps(self, run_dir: Path) -> list[str]:
        return [f"attnfit-finetune pretrained={run_dir}   # fine-tune the discriminator"]

    def build_model(self, record: ModelRecord) -> nn.Module:
        from attnfit.models import ModelConfig
        from attnfit.models.electra import ElectraConfig, ElectraModel

        head = ElectraConfig.from_dict(record.head_config or {})
        return ElectraModel(ModelConfig.from_dict(record.model_config), head)

    def evaluation_module(self, artifact: Artifact, cfg: DictConfig) -> Any:
        from attnfit.pretrained import build_model

        return ElectraModule(build_model(artifact), artifact.record)

    def predict(self, model: nn.Module, artifact: Artifact, text: str, cfg: DictConfig, out: Path, index: int) -> dict:
        """Which tokens of ``text`` the discriminator takes for replaced ones (its probability per token)."""
        from attnfit.viz import token_strings

        tokenizer = artifact.record.tokenizers()[0]
        ids = tokenizer.encode(text, add_special_tokens=False).ids[: int(artifact.model_config["max_len"])]
        with torch.no_grad():
            probs = model.discriminate(torch.tensor([ids]))[0].sigmoid().tolist()
        tokens = token_strings(tokenizer, ids)
        print("  ".join(f"{t}:{p:.2f}" for t, p in zip(tokens, probs, strict=True)))
        return {"text": text, "tokens": tokens, "replaced_probability": [round(p, 6) for p in probs]}
