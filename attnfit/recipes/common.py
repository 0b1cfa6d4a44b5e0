"""Pieces every recipe shares: config checks, the Trainer with its callbacks/logger, and the final report."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig

from attnfit.errors import ConfigError, TrainingInterrupted
from attnfit.options import container, lightning_class
from attnfit.recipes.checks import trainer_kwargs
from attnfit.training.callbacks import (
    GracefulShutdown,
    NonFiniteGuard,
    ProgressBar,
    RestoreRngState,
    SaveLastOnTrainEnd,
    StepCheckpoints,
    TokenThroughput,
    UnfinishedEpochState,
)
from attnfit.training.checkpoint_io import AtomicCheckpointIO
from attnfit.training.loggers import build_loggers, log_final

log = logging.getLogger("attnfit")


def is_rank_zero() -> bool:
    """True in the process that writes files. Lightning's DDP launcher starts the other ranks by re-running
    the same command with LOCAL_RANK/NODE_RANK set, before any Trainer tells them their rank."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def resume_path(ckpt_path: str | None, output_dir: Path) -> str | None:
    """``ckpt_path``: a checkpoint file, a run directory (its newest loadable checkpoint) or ``auto`` (this run's
    own directory, e.g. with ``hydra.run.dir=RUN_DIR``; nothing to resume there means a fresh start)."""
    from attnfit.pretrained import newest_valid_checkpoint

    if not ckpt_path:
        return None
    if str(ckpt_path) == "auto":
        if not list((output_dir / "checkpoints").glob("*.ckpt")):
            log.info("ckpt_path=auto: no checkpoint in %s yet, starting fresh", output_dir)
            return None
        ckpt_path = output_dir
    if Path(str(ckpt_path)).is_dir():
        path, skipped = newest_valid_checkpoint(str(ckpt_path))
        for note in skipped:
            log.warning(note)
        log.info("resuming from %s", path)
        return str(path)
    return str(ckpt_path)


def build_trainer(
    cfg: DictConfig,
    output_dir: Path,
    monitor: str = "val/loss",
    mode: str = "min",
    extra_callbacks: list[L.Callback] | None = None,
) -> L.Trainer:
    """Lightning Trainer from ``cfg.trainer`` with attnfit's checkpoints, ``cfg.logger``'s loggers, the
    ``callbacks.extra`` callbacks and the progress bar."""
    kwargs = trainer_kwargs(cfg)
    ckpt_cfg = cfg.callbacks.checkpoint
    checkpoint_dir = output_dir / "checkpoints"
    callbacks: list[L.Callback] = [
        ModelCheckpoint(
            dirpath=checkpoint_dir,
            filename="best-step{step:06d}",
            auto_insert_metric_name=False,
            monitor=monitor,
            mode=mode,
            save_top_k=1,
            save_last=True,
        ),
        SaveLastOnTrainEnd(str(checkpoint_dir / "last.ckpt")),
        GracefulShutdown(str(checkpoint_dir / "last.ckpt")),
        RestoreRngState(),
        UnfinishedEpochState(),
        LearningRateMonitor(logging_interval="step"),
        TokenThroughput(every_n_batches=max(1, int(kwargs.get("log_every_n_steps", 10)))),
    ]
    stopping = cfg.callbacks.get("early_stopping")
    if stopping:  # the best checkpoint's metric and direction unless the config names others (check_run_options)
        watched = (stopping.monitor, stopping.mode) if stopping.get("monitor") else (monitor, mode)
        callbacks.append(EarlyStopping(monitor=watched[0], mode=watched[1], patience=int(stopping.patience)))
    nonfinite = cfg.callbacks.get("nonfinite") or {}
    callbacks.append(NonFiniteGuard(nonfinite.get("policy", "stop"), int(nonfinite.get("max_skips", 10))))
    callbacks.extend(extra_callbacks or [])
    # After SaveLastOnTrainEnd (last.ckpt keeps the trained weights beside an average's), before StepCheckpoints
    # (a step checkpoint holds the average updated at that step).
    callbacks.extend(config_callbacks(cfg))
    if ckpt_cfg.every_n_steps or ckpt_cfg.get("every_n_minutes"):
        callbacks.append(
            StepCheckpoints(
                checkpoint_dir, ckpt_cfg.every_n_steps, ckpt_cfg.get("every_n_minutes"), int(ckpt_cfg.keep_last_k)
            )
        )
    if cfg.callbacks.progress_bar == "rich":
        callbacks.append(ProgressBar(leave=True))
    kwargs.setdefault("enable_progress_bar", cfg.callbacks.progress_bar != "none")
    plugins = [AtomicCheckpointIO()]
    if kwargs.get("strategy") == "fsdp":  # per-block units, bf16 policy, sharded checkpoints (trainer.fsdp)
        from attnfit.training.sharding import fsdp_strategy

        options = container(cfg.trainer.get("fsdp") or {})
        kwargs["strategy"] = fsdp_strategy(options, str(kwargs.get("precision", "32-true")))
    loggers = build_loggers(cfg)
    return L.Trainer(
        default_root_dir=str(output_dir), logger=loggers or False, callbacks=callbacks, plugins=plugins, **kwargs
    )


# attnfit's own callback settings; any other Lightning callback goes under callbacks.extra.NAME with its _target_.
CALLBACK_KEYS = ("checkpoint", "early_stopping", "progress_bar", "heatmaps", "nonfinite", "extra")


def check_callbacks(cfg: DictConfig) -> dict[str, type]:
    """``{name: class}`` of ``callbacks.extra``; a key of ``callbacks`` attnfit does not know (a Lightning callback
    put beside attnfit's, ``+callbacks.swa._target_=…``) or an entry without an importable Lightning callback class
    is a one-line ConfigError, not a callback silently ignored."""
    section = cfg.get("callbacks") or {}
    for key in section:
        if key not in CALLBACK_KEYS:
            where = f"callbacks.{key}"
            hint = f"; a Lightning callback goes under callbacks.extra: +callbacks.extra.{key}._target_=CLASS"
            raise ConfigError(f"unknown key {where}; attnfit's callback keys: {', '.join(CALLBACK_KEYS)}{hint}")
    example = (
        "+callbacks.extra.{0}._target_=lightning.pytorch.callbacks.EMAWeightAveraging (presets: "
        "callbacks/extra=ema|swa), or remove the section: '~callbacks.extra.{0}'"
    )  # the way out when ``~callbacks/extra`` dropped a preset that an experiment still sets (ema.decay)
    return {
        str(name): lightning_class(f"callbacks.extra.{name}", spec, L.Callback, example.format(name))
        for name, spec in (section.get("extra") or {}).items()
    }


def config_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """The callbacks of ``callbacks.extra``, instantiated by Hydra in the order they are listed."""
    from hydra.utils import instantiate

    check_callbacks(cfg)
    callbacks = []
    for name, spec in (cfg.callbacks.get("extra") or {}).items():
        try:
            callbacks.append(instantiate(spec))
        except Exception as error:  # a wrong argument: Hydra wraps the constructor's TypeError
            cause = error.__cause__ or error
            raise ConfigError(f"callbacks.extra.{name}: {str(cause).splitlines()[0]}") from None
    return callbacks


def fit(
    trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule, ckpt_path: str | None
) -> None:
    """``trainer.fit`` (weights-only checkpoint loading) that reports SIGTERM/Ctrl-C as
    :class:`TrainingInterrupted` once :class:`GracefulShutdown` has saved the last step."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SIGTERMException:
        shutdown = next(c for c in trainer.callbacks if isinstance(c, GracefulShutdown))
        name = shutdown.signal_name or "SIGTERM"
        run_dir = Path(shutdown.path).parents[1]
        raise TrainingInterrupted(
            f"{name} received: training stopped after step {trainer.global_step} and saved {shutdown.saved}; "
            f"continue it exactly with the same command and ckpt_path={run_dir}",
            name,
        ) from None


def total_training_steps(trainer_cfg: DictConfig, batches_per_epoch: int) -> int:
    """Optimizer steps the schedule spans: ``max_steps``, or epochs × batches / accumulation."""
    if trainer_cfg.get("max_steps", -1) and trainer_cfg.get("max_steps", -1) > 0:
        return int(trainer_cfg.max_steps)
    epochs = trainer_cfg.get("max_epochs") or 1
    return max(1, math.ceil(batches_per_epoch / trainer_cfg.get("accumulate_grad_batches", 1)) * epochs)


def flat_hparams(cfg: DictConfig) -> dict[str, Any]:
    """Config flattened to ``a.b.c`` keys with TensorBoard-friendly values, for the hparams tab."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        else:
            flat[prefix] = node if isinstance(node, (int, float, str, bool)) else str(node)

    walk(container(cfg), "")
    return {k: v for k, v in flat.items() if not k.startswith(("paths.", "hydra."))}


def final_metrics(trainer: L.Trainer, checkpoint: ModelCheckpoint | None) -> dict[str, float]:
    """Last logged metrics plus the best monitored score, as plain floats."""
    # Only "split/name" metrics: the short progress-bar aliases (loss, tok/s, val_loss) are display copies.
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.split("/")[0] in ("train", "val", "test")}
    if checkpoint is not None and checkpoint.best_model_score is not None:
        metrics[f"best/{checkpoint.monitor}"] = float(checkpoint.best_model_score)
    metrics["step"] = float(trainer.global_step)
    return metrics


def log_final_hparams(trainer: L.Trainer, cfg: DictConfig, metrics: dict[str, float]) -> None:
    """The config with the run's final metrics, and the resolved ``config.yaml``, to every logger."""
    log_final(trainer.loggers, flat_hparams(cfg), metrics, Path(cfg.paths.output_dir) / "config.yaml")


def write_metrics(output_dir: Path, metrics: dict[str, Any]) -> Path:
    """``metrics.json`` in the run directory: the machine-readable result of a run."""
    path = output_dir / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return path
