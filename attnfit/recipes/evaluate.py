"""Evaluate any saved model on a split of its own or another compatible dataset; table + JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from attnfit.errors import ConfigError, DataError
from attnfit.pretrained import Artifact, load_artifact
from attnfit.recipes.common import container
from attnfit.recipes.predict import check_beam_size


def evaluation_module(artifact: Artifact, beam_size: int | None = None) -> L.LightningModule:
    """The training module of the artifact's task with its weights, for ``Trainer.test``.

    A seq2seq module decodes with beam search: ``beam_size``, else the width the checkpoint was trained to use."""
    if artifact.task == "seq2seq":
        from attnfit.pretrained import build_model
        from attnfit.training.seq2seq_module import Seq2SeqModule

        decode = dict(artifact.extra.get("decode") or {})
        if beam_size is not None:
            decode["beam_size"] = int(beam_size)
        module = Seq2SeqModule(
            artifact.model_config,
            {},
            {},
            total_steps=1,
            tokenizer_json=artifact.tokenizer_json,
            target_tokenizer_json=artifact.extra.get("target_tokenizer"),
            metric=artifact.extra.get("metric", "bleu"),
            decode=decode,
        )
        module.model = build_model(artifact)
        return module
    if artifact.task == "classification":
        from attnfit.training.classification_module import ClassificationModule

        finetune = {"lora": {"enabled": True, **artifact.lora}} if artifact.lora else {}
        module = ClassificationModule(
            artifact.model_config,
            artifact.classifier_config,
            artifact.label_names or [],
            {},
            {},
            total_steps=1,
            finetune=finetune,
        )
        module.model.load_state_dict(artifact.state_dict)
        return module
    from attnfit.pretrained import build_model
    from attnfit.training.lm_module import LanguageModelingModule

    module = LanguageModelingModule(artifact.model_config, {}, {}, total_steps=1)
    module.model = build_model(artifact)
    return module


def job_config(cfg: DictConfig, artifact: Artifact) -> DictConfig:
    """The data part of the run that produced the artifact, with the user's ``data=`` and batch size on top."""
    run = artifact.run_config or {}
    data = container(cfg.data) if cfg.get("data") else run.get("data")
    if data is None:
        raise ConfigError(
            f"{artifact.source} does not record its dataset; give one with data=... (e.g. data=files data.test=PATH)"
        )
    data = {**data, "batch_size": int(cfg.batch_size), "num_workers": 0}
    task = run.get("task") or {"name": artifact.task, "mask_prob": 0.15}
    return OmegaConf.create(
        {
            "seed": int(cfg.seed),
            "data": data,
            "task": task,
            "tokenizer": run.get("tokenizer", {}),
            "paths": container(cfg.paths),
        }
    )


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Metrics of ``cfg.checkpoint`` on ``cfg.split``, printed as a table and written as JSON."""
    from rich.console import Console
    from rich.table import Table

    if not cfg.get("checkpoint"):
        raise ConfigError("checkpoint=PATH is required: a run directory, a .ckpt file or an exported model")
    check_beam_size(cfg.get("beam_size"))
    artifact = load_artifact(cfg.checkpoint)
    job = job_config(cfg, artifact)
    if artifact.task == "classification":
        from tokenizers import Tokenizer

        from attnfit.recipes.finetune import prepare_classification_data

        datamodule = prepare_classification_data(
            job, Tokenizer.from_str(artifact.tokenizer_json), label_names=artifact.label_names
        ).datamodule
    elif artifact.task == "seq2seq":
        datamodule = seq2seq_data(job, artifact, str(cfg.split))
    else:
        from attnfit.recipes.pretrain import prepare_data

        datamodule = prepare_data(job, tokenizer_json=artifact.tokenizer_json).datamodule
    splits = {"train": datamodule.train, "validation": datamodule.validation, "test": datamodule.test}
    available = [name for name, ds in splits.items() if ds is not None]
    if cfg.split not in available:
        raise DataError(f"split={cfg.split!r} is not in this data; available splits: {', '.join(available)}")
    loader = datamodule.loader_for(cfg.split)

    module = evaluation_module(artifact, cfg.get("beam_size"))
    trainer = L.Trainer(
        logger=False, enable_checkpointing=False, accelerator="auto", devices=1, enable_model_summary=False
    )
    results = trainer.test(module, dataloaders=loader, verbose=False)[0]
    metrics = {key.removeprefix("test/"): float(value) for key, value in results.items()}

    title = f"{artifact.task} · {artifact.source} · split {cfg.split} ({len(splits[cfg.split])} rows)"
    if artifact.task == "seq2seq":
        title += f" · beam {module.decode_cfg['beam_size']}"
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in sorted(metrics.items()):
        table.add_row(key, f"{value:.4f}")
    Console().print(table)
    out = Path(cfg.out) if cfg.get("out") else default_output(artifact, cfg.split)
    out.parent.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "checkpoint": str(artifact.source),
        "split": cfg.split,
        "rows": len(splits[cfg.split]),
        "metrics": metrics,
    }
    if artifact.task == "seq2seq":
        record["decode"] = {k: module.decode_cfg[k] for k in ("beam_size", "length_penalty", "max_len")}
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"metrics written to {out}")
    return metrics


def seq2seq_data(job: DictConfig, artifact: Artifact, split: str) -> L.LightningDataModule:
    """The parallel splits of the run's data, tokenized with the checkpoint's tokenizer(s). Validation and test keep
    their reference texts for BLEU/ROUGE; train gets them back from its target ids when it is the split scored."""
    from attnfit.recipes.seq2seq import prepare_pairs

    target_json = artifact.extra.get("target_tokenizer")
    datamodule = prepare_pairs(job, artifact.tokenizer_json, target_json).datamodule
    if split == "train" and "target_text" not in datamodule.train.column_names:
        from tokenizers import Tokenizer

        target = Tokenizer.from_str(target_json or artifact.tokenizer_json)
        datamodule.train = datamodule.train.map(
            lambda batch: {"target_text": target.decode_batch([ids[1:-1] for ids in batch["target_ids"]])},
            batched=True,
            desc="reference texts (train)",
        )
    return datamodule


def default_output(artifact: Artifact, split: str) -> Path:
    """``RUN_DIR/eval/<split>.json`` beside the checkpoint's run (or the export directory)."""
    source = artifact.source
    run_dir = (
        source.parent.parent
        if source.suffix == ".ckpt" and source.parent.name == "checkpoints"
        else (source if source.is_dir() else source.parent)
    )
    return run_dir / "eval" / f"{split}.json"
