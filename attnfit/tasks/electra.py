"""ELECTRA pretraining (``task=electra``): replaced-token detection. The data and masking are the masked LM's;
the discriminator (``model.backbone``) is what ``attnfit-finetune pretrained=RUN`` starts from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from attnfit.options import container, run_config
from attnfit.pretrained import Artifact, ModelRecord
from attnfit.tasks.base import Prepared
from attnfit.tasks.language_modeling import LanguageModeling

HEAD_KEYS = ("generator_dim_ratio", "generator_layers", "discriminator_weight", "temperature")


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
        from attnfit.training.electra_module import ElectraModule
        from attnfit.training.module import Optimization

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
        from attnfit.training.electra_module import ElectraModule

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
