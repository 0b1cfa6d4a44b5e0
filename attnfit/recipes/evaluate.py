"""Evaluate any saved model on a split of its own or another compatible dataset; table + JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from attnfit.errors import ConfigError, DataError
from attnfit.options import check_option_types, container, data_fits, output_file, write_text
from attnfit.pretrained import Artifact, load_artifact
from attnfit.recipes.predict import check_counts
from attnfit.tasks import get_task


def job_config(cfg: DictConfig, artifact: Artifact) -> DictConfig:
    """The data part of the run that produced the artifact, with the user's ``data=`` and batch size on top."""
    run = artifact.run_config or {}
    data = container(cfg.data) if cfg.get("data") else run.get("data")
    if data is None:
        raise ConfigError(
            f"{artifact.source} does not record its dataset; give one with data=... (e.g. data=files data.test=PATH)"
        )
    data = {**data, "batch_size": int(cfg.batch_size), "num_workers": 0}
    trained = (run.get("data") or {}).get("seq_len")
    if cfg.get("data") and trained is not None and int(data.get("seq_len", trained)) > int(trained):
        data["seq_len"] = int(trained)  # a data= group's default length: the model was trained on shorter ones
    task = run.get("task") or {"name": artifact.task, "mask_prob": 0.15}
    if not isinstance(task, dict) or "name" not in task:
        task = {"name": artifact.task}
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
    check_option_types(cfg)
    check_counts(cfg)
    weights = str(cfg.get("weights") or "average")
    artifact = load_artifact(cfg.checkpoint, weights)
    out = output_file(cfg.out if cfg.get("out") else default_output(artifact, cfg.split, weights), "out")
    job = job_config(cfg, artifact)
    task = get_task(artifact.task)
    fix = "give its own kind of data=, or leave data= out for the data it was trained on"
    with data_fits(f"a {artifact.task} model", fix):
        datamodule = task.evaluation_data(job, artifact, str(cfg.split))
    splits = {"train": datamodule.train, "validation": datamodule.validation, "test": datamodule.test}
    available = [name for name, ds in splits.items() if ds is not None]
    if cfg.split not in available:
        raise DataError(f"split={cfg.split!r} is not in this data; available splits: {', '.join(available)}")
    loader = datamodule.loader_for(cfg.split)

    module = task.evaluation_module(artifact, cfg)
    trainer = L.Trainer(
        logger=False, enable_checkpointing=False, accelerator="auto", devices=1, enable_model_summary=False
    )
    results = trainer.test(module, dataloaders=loader, verbose=False)[0]
    metrics = {key.removeprefix("test/"): float(value) for key, value in results.items()}

    title = f"{artifact.task} · {artifact.source} · split {cfg.split} ({len(splits[cfg.split])} rows)"
    if weights != "average":
        title += f" · {weights} weights"
    notes = task.evaluation_notes(module)
    if "decode" in notes:
        title += f" · beam {notes['decode']['beam_size']}"
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in sorted(metrics.items()):
        table.add_row(key, f"{value:.4f}")
    Console().print(table)
    record: dict[str, Any] = {
        "checkpoint": str(artifact.source),
        "weights": weights,
        "split": cfg.split,
        "rows": len(splits[cfg.split]),
        "metrics": metrics,
    }
    record.update(notes)
    write_text(out, json.dumps(record, indent=2) + "\n")
    print(f"metrics written to {out}")
    return metrics


def default_output(artifact: Artifact, split: str, weights: str = "average") -> Path:
    """``RUN_DIR/eval/<split>.json`` beside the checkpoint's run (or the export directory); ``<split>-trained.json``
    for the trained weights of a run that kept a weight average."""
    return artifact.run_dir() / "eval" / (f"{split}.json" if weights == "average" else f"{split}-{weights}.json")
