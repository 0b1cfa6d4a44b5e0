"""Checks every run makes before it reads any data: option types, the loader, the Trainer's options (by
Lightning's own rules, so a mistake is one line instead of a traceback mid-run), run options and the optimizer."""

from __future__ import annotations

import difflib
import inspect
import logging
import math
import typing
import warnings
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from attnfit.errors import ConfigError, check_choice
from attnfit.options import check_option_types, container

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
    for key in ("seed", "data_seed"):
        seed = cfg.get(key)
        if seed is not None and not 0 <= seed < 2**32:
            raise ConfigError(f"{key}={seed} must be from 0 to {2**32 - 1}")
    check_choice("optimized_mode", cfg.get("optimized_mode", "min"), ("min", "max"))
    callbacks = cfg.get("callbacks") or {}
    check_choice("callbacks.progress_bar", callbacks.get("progress_bar", "rich"), ("rich", "none"))
    from attnfit.recipes.common import check_callbacks
    from attnfit.training.loggers import check_loggers

    check_callbacks(cfg)
    check_loggers(cfg)
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
    stopping = callbacks.get("early_stopping") or {}
    monitor, mode = stopping.get("monitor"), stopping.get("mode")  # null and null: the task's metric and direction
    if monitor and not mode:
        raise ConfigError(
            f"callbacks.early_stopping.monitor={monitor} needs its direction: callbacks.early_stopping.mode=min or max"
        )
    if mode:
        check_choice("callbacks.early_stopping.mode", mode, ("min", "max"))


def check_loader(data: DictConfig) -> None:
    """Loader options the DataLoader would only refuse after the data is prepared."""
    if int(data.get("batch_size", 1)) < 1:
        raise ConfigError(f"data.batch_size={data.batch_size} must be ≥ 1")
    if int(data.get("num_workers", 0)) < 0:
        raise ConfigError(f"data.num_workers={data.num_workers} must be ≥ 0 (0 loads in the main process)")


def trainer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """``cfg.trainer`` as ``lightning.Trainer`` arguments; an unknown key is named with the closest valid one."""
    kwargs = container(cfg.trainer)
    kwargs.pop("fsdp", None)  # attnfit's FSDP options (trainer=fsdp): they build the strategy, see build_trainer
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
    limited = bool(cfg.get("trainer", {}).get("max_time"))
    optimizer = build_optimizer(dummy, **opt)
    build_scheduler(optimizer, sched.pop("name"), total_steps=1, **sched, time_used=(lambda: 0.0) if limited else None)
