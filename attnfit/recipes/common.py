"""Pieces every recipe shares: config checks, the Trainer with its callbacks/logger, and the final report."""

from __future__ import annotations

import difflib
import inspect
import json
import logging
import math
import os
import typing
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from attnfit.errors import ConfigError, TrainingInterrupted, check_choice
from attnfit.options import check_option_types, container
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

log = logging.getLogger("attnfit")


def check_common(cfg: DictConfig) -> None:
    """Checks every training run shares, before any data is read: option types, loader, trainer, optimization."""
    check_option_types(cfg)
    check_loader(cfg.data)
    check_trainer(cfg)
    check_run_options(cfg)
    check_optimization(cfg)


def check_run_options(cfg: DictConfig) -> None:
    """Seed, sweep objective and callback settings that a typo would otherwise turn into a traceback or silently
    into something else (an unknown progress bar into Lightning's own, ``optimized_mode=up`` into min)."""
    seed = cfg.get("seed")
    if seed is not None and not 0 <= seed < 2**32:
        raise ConfigError(f"seed={seed} must be from 0 to {2**32 - 1}")
    check_choice("optimized_mode", cfg.get("optimized_mode", "min"), ("min", "max"))
    callbacks = cfg.get("callbacks") or {}
    check_choice("callbacks.progress_bar", callbacks.get("progress_bar", "rich"), ("rich", "none"))
    every = OmegaConf.select(cfg, "callbacks.checkpoint.every_n_steps")
    if every is not None and (not _whole(every) or every < 1):
        raise ConfigError(f"callbacks.checkpoint.every_n_steps={every!r} must be a whole number ≥ 1, or null (off)")
    minutes = OmegaConf.select(cfg, "callbacks.checkpoint.every_n_minutes")
    if minutes is not None and (not _number(minutes) or not 0 < minutes < math.inf):
        raise ConfigError(f"callbacks.checkpoint.every_n_minutes={minutes!r} must be a number > 0, or null (off)")
    keep = OmegaConf.select(cfg, "callbacks.checkpoint.keep_last_k", default=1)
    if not _whole(keep) or keep < 1:
        raise ConfigError(f"callbacks.checkpoint.keep_last_k={keep!r} must be a whole number ≥ 1")
    skips = OmegaConf.select(cfg, "callbacks.nonfinite.max_skips", default=0)
    if not _whole(skips) or skips < 0:
        raise ConfigError(f"callbacks.nonfinite.max_skips={skips!r} must be a whole number ≥ 0")


def check_loader(data: DictConfig) -> None:
    """Loader options the DataLoader would only refuse after the data is prepared."""
    if int(data.get("batch_size", 1)) < 1:
        raise ConfigError(f"data.batch_size={data.batch_size} must be ≥ 1")
    if int(data.get("num_workers", 0)) < 0:
        raise ConfigError(f"data.num_workers={data.num_workers} must be ≥ 0 (0 loads in the main process)")


def trainer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """``cfg.trainer`` as ``lightning.Trainer`` arguments; an unknown key is named with the closest valid one."""
    kwargs = container(cfg.trainer)
    valid = set(inspect.signature(L.Trainer.__init__).parameters) - {"self"}
    for key in kwargs:
        if key not in valid:
            close = difflib.get_close_matches(key, sorted(valid), n=1)
            raise ConfigError(
                f"unknown trainer option trainer.{key}" + (f" (did you mean trainer.{close[0]}?)" if close else "")
            )
    return kwargs


def check_trainer(cfg: DictConfig) -> None:
    """Trainer options checked before any data is read, by Lightning's rules: first those it accepts when built
    but fails on (or silently misreads) in the middle of a run, then a trial build of the Trainer for the rest."""
    kwargs = trainer_kwargs(cfg)
    check_trainer_numbers(kwargs)
    check_trainer_hardware(kwargs)
    trial = {**kwargs, "logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            L.Trainer(**trial, enable_model_summary=False)
    except Exception as error:  # Lightning's own refusal; its message names the value
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"Lightning refuses the trainer options: {first}") from None


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_trainer_numbers(kwargs: dict[str, Any]) -> None:
    """Step counts, intervals and limits: each must let the run train, validate and log something."""
    get = kwargs.get
    max_steps, max_epochs = get("max_steps", -1), get("max_epochs")
    if not _whole(max_steps) or (max_steps < 1 and max_steps != -1):
        raise ConfigError(
            f"trainer.max_steps={max_steps!r} must be a whole number ≥ 1 (the optimizer steps to train), or -1 to "
            "stop by trainer.max_epochs or trainer.max_time"
        )
    if max_epochs is not None and (not _whole(max_epochs) or (max_epochs < 1 and max_epochs != -1)):
        raise ConfigError(f"trainer.max_epochs={max_epochs!r} must be a whole number ≥ 1, -1 (no limit) or null")
    if max_steps == -1 and max_epochs == -1 and not get("max_time"):
        raise ConfigError(
            "trainer.max_steps=-1 with trainer.max_epochs=-1 never stops: set trainer.max_steps, trainer.max_epochs "
            "or trainer.max_time"
        )
    for key in ("accumulate_grad_batches", "log_every_n_steps"):
        if key in kwargs and (not _whole(get(key)) or get(key) < 1):
            raise ConfigError(f"trainer.{key}={get(key)!r} must be a whole number ≥ 1")
    clip = get("gradient_clip_val")
    if clip is not None and (not _number(clip) or not math.isfinite(clip) or clip < 0):
        raise ConfigError(f"trainer.gradient_clip_val={clip!r} must be a number ≥ 0, or null for no clipping")
    check_val_check_interval(get("val_check_interval"), get("check_val_every_n_epoch"))
    batches = max_steps * get("accumulate_grad_batches", 1)
    interval = get("val_check_interval")
    if max_steps > 0 and _whole(interval) and interval > batches and get("check_val_every_n_epoch") is None:
        log.warning(
            "trainer.val_check_interval=%d is more than the %d training batches of this run: no validation will run "
            "(no val metrics, no best checkpoint); choose trainer.val_check_interval ≤ %d to validate",
            interval, batches, batches,
        )  # fmt: skip
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
        limit = get(key)
        if limit is not None and not _fraction_or_count(limit, zero=key != "limit_train_batches"):
            raise ConfigError(
                f"trainer.{key}={limit!r} must be a whole number of batches or a fraction in [0, 1] (1.0: all)"
                + ("; 0 would train nothing" if key == "limit_train_batches" else "")
            )
    sanity = get("num_sanity_val_steps")
    if sanity is not None and (not _whole(sanity) or sanity < -1):
        raise ConfigError(f"trainer.num_sanity_val_steps={sanity!r} must be a whole number ≥ 0, or -1 (all)")
    every = get("check_val_every_n_epoch")
    if every is not None and (not _whole(every) or every < 1):
        raise ConfigError(f"trainer.check_val_every_n_epoch={every!r} must be a whole number ≥ 1, or null")
    for key, extra in (("deterministic", ("warn",)), ("benchmark", ())):
        value = get(key)
        if value is not None and not isinstance(value, bool) and value not in extra:
            raise ConfigError(f"trainer.{key}={value!r} must be {', '.join(('true', 'false', *extra))} or null")


def check_val_check_interval(interval: Any, every_n_epoch: Any) -> None:
    """Lightning's rule: a whole number of batches ≥ 1 or a duration ('DD:HH:MM:SS'); a fraction of the epoch only
    where validation is epoch-based (``check_val_every_n_epoch`` set), as steps count across epochs otherwise."""
    if interval is None or isinstance(interval, (str, dict)):
        return  # durations: the trial build checks their format
    fraction_ok = every_n_epoch is not None
    if _fraction_or_count(interval, zero=False) and (_whole(interval) or fraction_ok):
        return
    raise ConfigError(
        f"trainer.val_check_interval={interval!r} must be a whole number of batches ≥ 1 or a duration 'DD:HH:MM:SS'"
        + (
            "; or a fraction of the epoch in (0, 1]"
            if fraction_ok
            else " (a fraction of the epoch in (0, 1] needs trainer.check_val_every_n_epoch=1)"
        )
    )


def _fraction_or_count(value: Any, zero: bool) -> bool:
    """Lightning's rule for limits and intervals: an int counts batches, a float is a fraction of the epoch."""
    if _whole(value):
        return value >= (0 if zero else 1)
    return _number(value) and (value >= 0 if zero else value > 0) and value <= 1


def check_trainer_hardware(kwargs: dict[str, Any]) -> None:
    """Precision and accelerator named against Lightning's own lists, and a device that this machine lacks."""
    from lightning.fabric.plugins.precision.precision import _PRECISION_INPUT_STR, _PRECISION_INPUT_STR_ALIAS
    from lightning.pytorch.accelerators import AcceleratorRegistry

    if "precision" in kwargs:
        precisions = [*typing.get_args(_PRECISION_INPUT_STR), *typing.get_args(_PRECISION_INPUT_STR_ALIAS)]
        check_choice("trainer.precision", str(kwargs["precision"]), precisions)
    devices = kwargs.get("devices", "auto")
    if (_whole(devices) and devices < 1 and devices != -1) or (
        isinstance(devices, str) and devices != "auto" and not all(d.strip().isdigit() for d in devices.split(","))
    ):
        raise ConfigError(
            f"trainer.devices={devices!r} must be a number of devices ≥ 1, -1 (all of them), auto, or a list of "
            "device indices such as [0,1]"
        )
    accelerator = kwargs.get("accelerator", "auto")
    if not isinstance(accelerator, str):
        return  # an Accelerator instance (from Python): Lightning's trial build checks it
    accelerators = {"auto", "gpu", *AcceleratorRegistry.available_accelerators()}
    check_choice("trainer.accelerator", accelerator, accelerators)
    if accelerator not in ("auto", "cpu") and not _accelerator_available(accelerator):
        raise ConfigError(
            f"trainer.accelerator={accelerator}: this machine has no {accelerator} device; use trainer.accelerator=cpu "
            "or auto (trainer=cpu)"
        )


def _accelerator_available(name: str) -> bool:
    from lightning.pytorch.accelerators import AcceleratorRegistry

    names = ("cuda", "mps") if name == "gpu" else (name,)
    try:
        return any(AcceleratorRegistry[n]["accelerator"].is_available() for n in names if n in AcceleratorRegistry)
    except Exception:  # e.g. tpu without torch_xla installed
        return False


def check_optimization(cfg: DictConfig) -> None:
    """Build the optimizer and schedule on a dummy parameter so their settings fail before data is loaded."""
    import torch

    from attnfit.training.optim import build_optimizer, build_scheduler

    opt, sched = container(cfg.optimizer), container(cfg.scheduler)
    dummy = [{"params": [torch.nn.Parameter(torch.zeros(1))], "weight_decay": opt.pop("weight_decay", 0.0)}]
    if dummy[0]["weight_decay"] < 0:
        raise ConfigError(f"optimizer.weight_decay={dummy[0]['weight_decay']} must be ≥ 0")
    build_scheduler(build_optimizer(dummy, **opt), sched.pop("name"), total_steps=1, **sched)


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
    """Lightning Trainer from ``cfg.trainer`` with attnfit's checkpoints, TensorBoard logger and progress bar."""
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
    if ckpt_cfg.every_n_steps or ckpt_cfg.get("every_n_minutes"):
        callbacks.append(
            StepCheckpoints(
                checkpoint_dir, ckpt_cfg.every_n_steps, ckpt_cfg.get("every_n_minutes"), int(ckpt_cfg.keep_last_k)
            )
        )
    stopping = cfg.callbacks.get("early_stopping")
    if stopping:
        callbacks.append(EarlyStopping(monitor=stopping.monitor, mode=stopping.mode, patience=int(stopping.patience)))
    nonfinite = cfg.callbacks.get("nonfinite") or {}
    callbacks.append(NonFiniteGuard(nonfinite.get("policy", "stop"), int(nonfinite.get("max_skips", 10))))
    callbacks.extend(extra_callbacks or [])
    if cfg.callbacks.progress_bar == "rich":
        callbacks.append(ProgressBar(leave=True))
    logger = build_logger(cfg.logger.kind, output_dir)
    kwargs.setdefault("enable_progress_bar", cfg.callbacks.progress_bar != "none")
    plugins = [AtomicCheckpointIO()]
    return L.Trainer(default_root_dir=str(output_dir), logger=logger, callbacks=callbacks, plugins=plugins, **kwargs)


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


def build_logger(kind: str, output_dir: Path) -> Logger:
    """TensorBoard (``RUN_DIR/tensorboard``) or CSV (``RUN_DIR/csv``) logging."""
    check_choice("logger", kind, ("tensorboard", "csv"))
    if kind == "csv":
        return CSVLogger(save_dir=str(output_dir), name="csv", version="")
    return TensorBoardLogger(save_dir=str(output_dir), name="tensorboard", version="", default_hp_metric=False)


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
    """The config with the run's final metrics: TensorBoard's hparams tab compares runs on them."""
    logger = trainer.logger
    if isinstance(logger, TensorBoardLogger):
        logger.log_hyperparams(flat_hparams(cfg), {f"hparams/{k}": v for k, v in metrics.items()})
    elif logger is not None:
        logger.log_hyperparams(flat_hparams(cfg))
    if logger is not None:
        logger.finalize("success")


def write_metrics(output_dir: Path, metrics: dict[str, Any]) -> Path:
    """``metrics.json`` in the run directory: the machine-readable result of a run."""
    path = output_dir / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return path
