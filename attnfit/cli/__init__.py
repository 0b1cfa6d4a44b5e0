"""Command-line entry points (Hydra). Thin: each composes a config and hands it to a recipe."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")


def run_or_explain(recipe: Callable[[Any], Any], cfg: Any) -> Any:
    """Run ``recipe(cfg)``; a user mistake (:class:`AttnfitError`) becomes one line on stderr and exit code 2.

    Training runs also record ``status.json`` in their run directory. In a multirun (sweep) a failed run is
    recorded with its error and the sweep goes on with the next one.
    """
    from attnfit.errors import AttnfitError

    quiet_third_party_logs()
    multirun = _in_multirun()
    start = time.perf_counter()
    try:
        result = recipe(cfg)
    except AttnfitError as error:
        _record(cfg, "failed", None, str(error), start)
        logging.getLogger("attnfit").debug("user error", exc_info=True)  # the full trace stays in the run's log
        print(f"error: {error}", file=sys.stderr)
        if multirun:
            return None
        sys.exit(2)
    except Exception as error:
        _record(cfg, "failed", None, f"{type(error).__name__}: {error}", start)
        if multirun:
            logging.getLogger("attnfit").exception("run failed; the sweep goes on")
            return None
        raise
    if isinstance(result, float) and math.isnan(result):
        _record(cfg, "failed", None, f"{cfg.optimized_metric} is NaN: the run diverged", start)
        return None
    _record(cfg, "completed", result, None, start)
    return result


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _record(cfg: Any, status: str, objective: Any, error: str | None, start: float) -> None:
    """``status.json`` for training recipes (those with a run directory and an objective)."""
    from attnfit.recipes.common import is_rank_zero

    if "optimized_metric" not in cfg or "paths" not in cfg or not is_rank_zero():
        return
    from attnfit.recipes.status import write_status

    write_status(cfg, status, objective, error, time.perf_counter() - start)


def quiet_third_party_logs() -> None:
    """Hide the advice Lightning prints for every run on a CPU-only machine; keep warnings that matter."""
    import warnings

    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
        "lightning.fabric.utilities.seed",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*`isinstance\\(treespec, LeafSpec\\)`.*")
