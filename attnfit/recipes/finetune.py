"""Fine-tuning: pretrained artifact → classification data with its tokenizer → classifier → fit → test → report."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from attnfit.errors import ConfigError, check_choice
from attnfit.pretrained import load_artifact, merged_state_dict
from attnfit.recipes.common import (
    build_trainer,
    check_option_types,
    container,
    final_metrics,
    fit,
    is_rank_zero,
    log_final_hparams,
    resume_path,
    run_config,
    total_training_steps,
    write_metrics,
)
from attnfit.recipes.pretrain import check_optimization
from attnfit.training.datamodule import TokenizedDataModule

log = logging.getLogger("attnfit")
FINETUNE_TASKS = ("classification", "seq2seq")


@dataclass
class ClassificationData:
    datamodule: TokenizedDataModule
    label_names: list[str]
    class_weights: list[float] | None
    num_train_rows: int
    examples: dict[str, Any]  # a few collated validation rows for heat maps
    example_tokens: list[list[str]]


def prepare_classification_data(
    cfg: DictConfig, tokenizer: Any, label_names: list[str] | None = None, num_examples: int = 4
) -> ClassificationData:
    """Load the splits, fix the label names (from train unless given), tokenize, and build loaders."""
    from attnfit.data import special_token_id
    from attnfit.data.classification import (
        ClassificationCollator,
        class_weights,
        label_names_from,
        load_classification_splits,
        tokenize_for_classification,
    )

    data, cache_dir = cfg.data, Path(cfg.paths.cache_dir)
    files = {split: data.get(split) for split in ("train", "validation", "test") if data.get(split)}
    splits = load_classification_splits(
        data.source,
        files=files,
        hub_path=data.get("path"),
        hub_subset=data.get("subset"),
        hub_splits=container(data.get("splits")) if data.get("splits") else None,
        text_column=data.get("text_column", "text"),
        text_pair_column=data.get("text_pair_column"),
        label_column=data.get("label_column", "label"),
        column_names=container(data.get("column_names")) if data.get("column_names") else None,
        file_format=data.get("format"),
        val_fraction=data.get("val_fraction", 0.1),
        seed=cfg.seed,
        cache_dir=cache_dir / "datasets",
        embedded_dir=cache_dir / "embedded-classification",
    )
    label_names = label_names or label_names_from(splits["train"]["label"])
    seq_len = int(data.seq_len)
    encoded = {
        name: tokenize_for_classification(ds, tokenizer, seq_len, label_names, split=name)
        for name, ds in splits.items()
    }
    weights = None
    if cfg.task.get("class_weights"):
        weights = class_weights(encoded["train"]["label"], len(label_names)).tolist()
    collator = ClassificationCollator(special_token_id(tokenizer, "pad"))
    datamodule = TokenizedDataModule(
        encoded["train"],
        encoded["validation"],
        collator,
        collator,
        int(data.batch_size),
        int(data.num_workers),
        cfg.seed,
        test=encoded.get("test"),
        shuffle=bool(data.get("shuffle", True)),
    )
    rows = [encoded["validation"][i] for i in range(min(num_examples, len(encoded["validation"])))]
    tokens = [[tokenizer.decode([t]).strip() or tokenizer.id_to_token(t) for t in row["input_ids"]] for row in rows]
    return ClassificationData(datamodule, label_names, weights, len(encoded["train"]), collator(rows), tokens)


def check_finetune_config(cfg: DictConfig) -> None:
    """Cheap checks before anything is loaded."""
    if not cfg.get("pretrained"):
        raise ConfigError(
            "pretrained=PATH is required: a run directory (as printed by attnfit-train), a .ckpt file or an "
            "exported model directory"
        )
    check_choice("task", cfg.task.name, FINETUNE_TASKS)
    check_option_types(cfg)
    if int(cfg.data.seq_len) < 3:
        raise ConfigError(f"data.seq_len={cfg.data.seq_len} must be ≥ 3 (<cls>, one token, <eos>)")
    if int(cfg.data.batch_size) < 1:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} must be ≥ 1")
    ft = cfg.finetune
    if int(ft.freeze_layers) < 0:
        raise ConfigError(f"finetune.freeze_layers={ft.freeze_layers} must be ≥ 0")
    if ft.head_lr is not None and float(ft.head_lr) <= 0:
        raise ConfigError(f"finetune.head_lr={ft.head_lr} must be > 0")
    check_optimization(cfg)


def finetune(cfg: DictConfig, callbacks: list[L.Callback] | None = None) -> float | None:
    """Run one fine-tuning job; returns ``cfg.optimized_metric`` for Hydra sweepers.

    ``callbacks`` are added to the Trainer's (a search adds its pruning callback here)."""
    from tokenizers import Tokenizer

    from attnfit.models import ModelConfig
    from attnfit.training.callbacks import AttentionHeatmaps
    from attnfit.training.classification_module import ClassificationModule

    if cfg.task.name == "seq2seq":
        from attnfit.recipes.seq2seq import train_seq2seq

        if not cfg.get("pretrained"):
            raise ConfigError("attnfit-finetune needs pretrained=RUN_DIR (a run directory, .ckpt or export)")
        return train_seq2seq(cfg, callbacks, pretrained=load_artifact(cfg.pretrained))
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    check_finetune_config(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    artifact = load_artifact(cfg.pretrained)
    log.info(
        "pretrained: %s (%s, %s encoder + %s attention)",
        artifact.source,
        artifact.task,
        artifact.model_config["encoder"]["name"],
        artifact.model_config["attention"]["name"],
    )
    model_config = ModelConfig.from_dict(artifact.model_config)
    if int(cfg.data.seq_len) > model_config.max_len:
        raise ConfigError(
            f"data.seq_len={cfg.data.seq_len} exceeds the pretrained model's max_len="
            f"{model_config.max_len}; choose data.seq_len ≤ {model_config.max_len}"
        )
    tokenizer = Tokenizer.from_str(artifact.tokenizer_json)  # the vocabulary is never retrained
    data = prepare_classification_data(cfg, tokenizer)
    if is_rank_zero():
        (output_dir / "tokenizer.json").write_text(artifact.tokenizer_json)
        OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)
    log.info("data: %d training examples, labels: %s", data.num_train_rows, ", ".join(data.label_names))

    batches = math.ceil(data.num_train_rows / int(cfg.data.batch_size))
    classifier = {"num_labels": len(data.label_names), "pooling": cfg.task.pooling, "dropout": cfg.task.dropout}
    module = ClassificationModule(
        artifact.model_config,
        classifier,
        data.label_names,
        container(cfg.optimizer),
        container(cfg.scheduler),
        total_steps=total_training_steps(cfg.trainer, batches),
        finetune=container(cfg.finetune),
        class_weights=data.class_weights,
        tokenizer_json=artifact.tokenizer_json,
        run_config=run_config(cfg),
        backbone_state=None if cfg.finetune.from_scratch else merged_state_dict(artifact),
    )
    report_loading(module)

    extra = [AttentionHeatmaps(data.examples, data.example_tokens)] if cfg.callbacks.get("heatmaps") else []
    extra += callbacks or []
    trainer = build_trainer(cfg, output_dir, monitor="val/f1", mode="max", extra_callbacks=extra)
    ckpt_path = resume_path(cfg.ckpt_path, output_dir)
    fit(trainer, module, data.datamodule, ckpt_path)
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    metrics = final_metrics(trainer, trainer.checkpoint_callback)
    if data.datamodule.test is not None:
        results = trainer.test(
            module, datamodule=data.datamodule, ckpt_path=best or None, verbose=False, weights_only=True
        )
        metrics.update({k: float(v) for k, v in results[0].items()})
    if trainer.is_global_zero:
        write_metrics(output_dir, metrics)
        log_final_hparams(trainer, cfg, metrics)
        report(output_dir, metrics, best)
    return metrics.get(cfg.optimized_metric)


def report_loading(module: Any) -> None:
    """What came from the pretrained model, what is new, and how much will train (also kept in train.log)."""
    if module.load_report is not None:
        log.info(module.load_report.summary())
    else:
        log.info("finetune.from_scratch=true: every weight is newly initialised (baseline run)")
    total = sum(p.numel() for p in module.model.parameters())
    log.info(
        "trainable parameters: %s of %s%s",
        f"{module.trainable_parameters():,}",
        f"{total:,}",
        " (LoRA adapters and head)" if module.lora else "",
    )


def report(output_dir: Path, metrics: dict[str, float], best: str) -> None:
    from rich.console import Console

    console = Console(soft_wrap=True)
    shown = {k: v for k, v in metrics.items() if k.split("/")[0] in ("val", "test", "best")}
    console.print("  ".join(f"{k} {v:.4f}" for k, v in sorted(shown.items())))
    console.print(f"run directory: {output_dir}")
    if best:
        console.print(f"best checkpoint: {best}")
    console.print("next:")
    console.print(f"  attnfit-eval checkpoint={output_dir}")
    console.print(f'  attnfit-predict checkpoint={output_dir} text="..." heatmap=true')
    console.print(f"  attnfit-export checkpoint={output_dir} out={output_dir / 'export'}")
