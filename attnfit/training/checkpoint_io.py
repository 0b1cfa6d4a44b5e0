"""Checkpoint files that are never half-written (temporary file, fsync, atomic rename) and never non-finite."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from attnfit.atomic import atomic_write
from attnfit.errors import disk_is_full

log = logging.getLogger("attnfit")


def first_non_finite(state_dict: dict[str, Any]) -> str | None:
    """The name of the first floating-point tensor holding a NaN or Inf, or None."""
    for name, tensor in state_dict.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


class AtomicCheckpointIO(TorchCheckpointIO):
    """A crash (or a full disk) while saving leaves the previous ``last.ckpt`` in place, never a truncated one;
    weights with a NaN or Inf are never written, so every checkpoint on disk is a good one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        bad = first_non_finite(checkpoint.get("state_dict") or {})
        if bad is not None:
            log.warning("%s not written: NaN/Inf in the weights (%s); the previous checkpoint is kept", path, bad)
            return
        path = Path(path)
        try:
            atomic_write(path, lambda tmp: torch.save(checkpoint, tmp), durable=True)
        except (RuntimeError, OSError) as error:  # torch's zip writer: a full disk is an "enforce fail"; name the file
            if disk_is_full(path.parent, error):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from error
            raise
