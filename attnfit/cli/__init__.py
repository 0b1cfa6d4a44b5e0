"""Command-line entry points (Hydra). Thin: each composes a config and hands it to a recipe."""

from __future__ import annotations

import contextlib
import difflib
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")


def run_or_explain(recipe: Callable[[Any], Any], cfg: Any) -> Any:
    """Run ``recipe(cfg)``; a user mistake (:class:`AttnfitError`) becomes one line on stderr and exit code 2.

    Training runs also record ``status.json`` in their run directory. In a multirun (sweep) a failed run is
    recorded with its error and the sweep goes on with the next one.
    """
    from attnfit.errors import AttnfitError, TrainingInterrupted

    quiet_third_party_logs()
    multirun = _in_multirun()
    start = time.perf_counter()
    try:
        result = recipe(cfg)
    except TrainingInterrupted as error:  # a sweep stops too: the user or the scheduler asked for it
        _record(cfg, "interrupted", None, str(error), start)
        print(f"stopped: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:  # before training started: nothing to save
        _record(cfg, "interrupted", None, "interrupted before training started", start)
        print("stopped: interrupted before training started; nothing to save", file=sys.stderr)
        sys.exit(130)
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


@contextlib.contextmanager
def explain_unknown_keys(config_name: str) -> Iterator[None]:
    """Hydra reports an unknown override key (``trainer.max_step=5``) as "not in struct"; after it exits, say
    which keys exist there and which one was probably meant. Costs nothing unless Hydra failed."""
    try:
        yield
    except SystemExit as exit_:
        if exit_.code == 1:
            with contextlib.suppress(Exception):
                hint = unknown_key_hint(config_name, [a for a in sys.argv[1:] if "=" in a and not a.startswith("-")])
                if hint:
                    print(hint, file=sys.stderr)
        raise


def unknown_key_hint(config_name: str, overrides: list[str]) -> str | None:
    """``"unknown key trainer.max_step (did you mean trainer.max_steps?) …"`` if an override names a missing key."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    GlobalHydra.instance().clear()
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        try:
            compose(config_name, overrides=overrides)
            return None
        except Exception as error:
            cause = error.__cause__
        if not isinstance(cause, (ConfigAttributeError, ConfigKeyError)) or not cause.full_key:
            return None
        full_key = cause.full_key
        parent_key, _, leaf = full_key.rpartition(".")
        rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != full_key]
        root = compose(config_name, overrides=rest)
        parent = OmegaConf.select(root, parent_key) if parent_key else root
    if not isinstance(parent, DictConfig):
        return None
    keys = sorted(str(k) for k in parent if k != "hydra")
    prefix = f"{parent_key}." if parent_key else ""
    close = difflib.get_close_matches(leaf, keys, n=1)
    hint = f"unknown key {full_key}" + (f" (did you mean {prefix}{close[0]}?)" if close else "")
    hint += f"; keys {'under ' + parent_key if parent_key else 'at the top level'}: {', '.join(keys)}"
    return hint + f". To add a new key on purpose: +{full_key}=..."


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
