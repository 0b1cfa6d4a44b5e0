"""How a training run ended — completed, failed, pruned or interrupted — decided once (:func:`outcome`) and
recorded in ``RUN_DIR/status.json`` with its score and overrides: what sweeps, searches and reports read."""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

STATUS_FILE = "status.json"


def outcome(value: Any, metric: str) -> tuple[str, str | None]:
    """``(status, error)`` of a run that returned ``value`` for its optimized ``metric``: a NaN means it diverged,
    nothing means the metric was never logged."""
    if value is None:
        return "failed", f"the run did not log {metric} (optimized_metric)"
    if isinstance(value, float) and math.isnan(value):
        return "failed", f"{metric} is NaN: the run diverged"
    return "completed", None


def write_status(
    cfg: Any, status: str, objective: Any, error: str | None, seconds: float, notes: dict[str, Any] | None = None
) -> Path | None:
    """Write ``RUN_DIR/status.json``; ``status`` is completed, failed, pruned or interrupted. ``notes``: what a
    re-run sweep did with the run (``resumed``, ``skipped``: how many times)."""
    try:
        output_dir = Path(cfg.paths.output_dir)
    except Exception:  # the run directory itself could not be resolved: nothing to write into
        return None
    output_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "status": status,
        "objective": float(objective) if isinstance(objective, (int, float)) else None,
        "optimized_metric": str(cfg.get("optimized_metric")),
        "mode": str(cfg.get("optimized_mode", "min")),
        "error": error,
        "seconds": round(seconds, 3),
        "overrides": _overrides(),
        **(notes or {}),
    }
    path = output_dir / STATUS_FILE
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def _overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def read_status(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / STATUS_FILE
    return json.loads(path.read_text()) if path.exists() else None


def run_recorded(recipe: Callable[[Any], Any], cfg: Any) -> Any:
    """Run ``recipe(cfg)``; a user mistake (:class:`AttnfitError`) becomes one line on stderr and exit code 2.

    Training runs also record ``status.json`` in their run directory. In a multirun (sweep) a failed run is
    recorded with its error and the sweep goes on with the next one.
    """
    from attnfit.errors import AttnfitError, TrainingInterrupted

    multirun = _in_multirun()
    start = time.perf_counter()
    notes: dict[str, Any] = {}
    if multirun and _is_training(cfg):
        earlier = _earlier_attempt(cfg, notes)
        if earlier is not None:  # completed by an earlier run of the same sweep: not redone
            return earlier
    try:
        result = _disk_full_explained(recipe, cfg)
    except TrainingInterrupted as error:  # a sweep stops too: the user or the scheduler asked for it
        _record(cfg, "interrupted", None, str(error), start, notes)
        print(f"stopped: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:  # before training started: nothing to save
        _record(cfg, "interrupted", None, "interrupted before training started", start, notes)
        print("stopped: interrupted before training started; nothing to save", file=sys.stderr)
        sys.exit(130)
    except AttnfitError as error:
        _record(cfg, "failed", None, str(error), start, notes)
        logging.getLogger("attnfit").debug("user error", exc_info=True)  # the full trace stays in the run's log
        print(f"error: {error}", file=sys.stderr)
        if multirun:
            return None
        sys.exit(2)
    except Exception as error:
        _record(cfg, "failed", None, f"{type(error).__name__}: {error}", start, notes)
        if multirun:
            logging.getLogger("attnfit").exception("run failed; the sweep goes on")
            return None
        raise
    status, error = outcome(result, str(cfg.get("optimized_metric")))
    if status == "failed" and result is not None:  # diverged: a sweep records it and goes on
        _record(cfg, status, None, error, start, notes)
        return None
    _record(cfg, "completed", result, None, start, notes)
    return result


def _disk_full_explained(recipe: Callable[[Any], Any], cfg: Any) -> Any:
    """``recipe(cfg)``; a disk that fills up while it writes (a checkpoint, an export, a result) is a user-facing
    :class:`AttnfitError`, not a bug."""
    from attnfit.errors import DISK_FULL, AttnfitError

    try:
        return recipe(cfg)
    except OSError as error:
        if error.errno not in DISK_FULL:
            raise
        raise AttnfitError(
            f"the disk is full: {error.filename or 'a file'} could not be written ({error.strerror}); free some space "
            "and run the command again (checkpoints are written atomically: a run continues from its last one with "
            "ckpt_path=auto)"
        ) from None


def _is_training(cfg: Any) -> bool:
    return "optimized_metric" in cfg and "paths" in cfg


def _earlier_attempt(cfg: Any, notes: dict[str, Any]) -> Any:
    """A sweep run again into its directory (same ``hydra.sweep.dir``) redoes nothing that completed: a job whose
    run directory holds a completed run returns that run's objective (``skipped`` counts it); one that was
    stopped resumes from its newest checkpoint (``ckpt_path=auto``; ``resumed`` counts it); the rest start.
    A run directory of other overrides stops the sweep: it is not this sweep's."""
    from omegaconf import open_dict

    output_dir = Path(cfg.paths.output_dir)
    earlier = read_status(output_dir) or {}
    overrides = _overrides()
    if earlier.get("overrides") not in (None, overrides):
        print(
            f"error: {output_dir} holds a run of other overrides ({' '.join(earlier['overrides']) or 'none'}) than "
            f"this job ({' '.join(overrides) or 'none'}): re-running a sweep resumes it only with the same command; "
            "give a fresh hydra.sweep.dir",
            file=sys.stderr,
        )
        sys.exit(2)
    notes.update({k: earlier[k] for k in ("resumed", "skipped") if k in earlier})
    if earlier.get("status") == "completed":
        notes["skipped"] = notes.get("skipped", 0) + 1
        write_status(cfg, "completed", earlier.get("objective"), None, earlier.get("seconds") or 0.0, notes)
        print(f"skipped: {output_dir} completed earlier ({earlier.get('optimized_metric')}={earlier.get('objective')})")
        return earlier.get("objective")
    if not cfg.get("ckpt_path") and any((output_dir / "checkpoints").glob("*.ckpt")):
        with open_dict(cfg):
            cfg.ckpt_path = "auto"
        notes["resumed"] = notes.get("resumed", 0) + 1
        print(f"resuming: {output_dir} was stopped; it continues from its newest checkpoint")
    return None


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _record(
    cfg: Any, status: str, objective: Any, error: str | None, start: float, notes: dict[str, Any] | None = None
) -> None:
    """``status.json`` for training recipes (those with a run directory and an objective)."""
    from attnfit.recipes.common import is_rank_zero

    if not _is_training(cfg) or not is_rank_zero():
        return
    try:
        write_status(cfg, status, objective, error, time.perf_counter() - start, notes)
    except OSError as write_error:  # a full disk: the run's own error matters more than its record
        logging.getLogger("attnfit").warning("could not write %s: %s", STATUS_FILE, write_error.strerror or write_error)
