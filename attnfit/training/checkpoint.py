"""What attnfit stores in a Lightning checkpoint besides weights: plain data, so ``weights_only=True`` loads it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from attnfit.errors import CheckpointError

FORMAT_VERSION = 1
KEY = "attnfit"


def metadata(model_config: dict, task: str, tokenizer_json: str, extra: dict | None = None) -> dict[str, Any]:
    """The ``checkpoint["attnfit"]`` entry: enough to rebuild the model and its tokenizer without the run dir."""
    return {
        "format_version": FORMAT_VERSION,
        "task": task,
        "model_config": model_config,
        "tokenizer": tokenizer_json,
        **(extra or {}),
    }


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely (no arbitrary unpickling) and check it is an attnfit checkpoint."""
    path = Path(path)
    if path.is_dir():
        candidate = path / "checkpoints" / "last.ckpt"
        if not candidate.exists():
            raise CheckpointError(f"run directory {path} has no checkpoints/last.ckpt")
        path = candidate
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # truncated, not a zip, or holds objects that are not plain data
        raise CheckpointError(f"{path} is not a readable checkpoint: {str(error).splitlines()[0]}") from None
    meta = checkpoint.get(KEY) if isinstance(checkpoint, dict) else None
    if not isinstance(meta, dict) or "model_config" not in meta:
        raise CheckpointError(f"{path} is not an attnfit checkpoint (no '{KEY}' metadata)")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer attnfit (format {meta['format_version']} > {FORMAT_VERSION}); upgrade"
        )
    return checkpoint
