"""Command-line entry points (Hydra). Thin: each composes a config and hands it to a recipe."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")


def run_or_explain(recipe: Callable[[Any], Any], cfg: Any) -> Any:
    """Run ``recipe(cfg)``; a user mistake (:class:`AttnfitError`) becomes one line on stderr and exit code 2."""
    from attnfit.errors import AttnfitError

    quiet_third_party_logs()
    try:
        return recipe(cfg)
    except AttnfitError as error:
        logging.getLogger("attnfit").debug("user error", exc_info=True)  # the full trace stays in the run's log
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


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
