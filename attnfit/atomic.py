"""Files that are never half-written: each is written under a temporary name and renamed into place.

The temporary name carries the writer's PID (``.NAME.tmp-PID-XXXX``), so the leftovers of a writer that died
mid-write (kill -9, a full disk) are recognised and removed by the next write into the same folder.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

_TEMPORARY = re.compile(r"^\..+\.tmp-(\d+)-[0-9a-f]+$")


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def remove_orphans(directory: Path) -> list[Path]:
    """Delete the temporaries in ``directory`` whose writer is gone; returns what was removed."""
    removed = []
    for entry in Path(directory).glob(".*.tmp-*"):
        match = _TEMPORARY.match(entry.name)
        if match and not process_alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def temporary_beside(path: Path) -> Path:
    """A fresh name beside ``path`` for a file on its way there (``.NAME.tmp-PID-XXXX``, which remove_orphans knows)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def atomic_write(path: Path, write: Callable[[Path], None], durable: bool = False) -> None:
    """``write(tmp)`` a file (or folder) beside ``path``, then rename it to ``path``: readers see the old
    version or the new one. ``durable``: fsync the file and the folder, so the rename survives a power cut."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(path.parent)
    tmp = temporary_beside(path)
    try:
        write(tmp)
        if durable and tmp.is_file():
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
    if durable:
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
