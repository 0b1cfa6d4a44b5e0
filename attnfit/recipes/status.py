"""``status.json``: how a training run ended, what it scored and with which overrides — what sweeps read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

STATUS_FILE = "status.json"


def write_status(cfg: Any, status: str, objective: Any, error: str | None, seconds: float) -> Path | None:
    """Write ``RUN_DIR/status.json``; ``status`` is completed, failed, pruned or interrupted."""
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
