"""One owner per run directory: a lock file held for the life of a run, released on exit, and detected as stale
when the process that wrote it is gone (a kill -9, a crashed machine)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from attnfit.atomic import process_alive, temporary_beside
from attnfit.errors import ConfigError

LOCK_FILE = "run.lock"
log = logging.getLogger("attnfit")


def _owner(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # half-written or unreadable: treated as stale


def _create_with(path: Path, text: str) -> None:
    """Create ``path`` holding ``text`` in one step, or raise FileExistsError. Another process never sees it empty
    (which it would take for a stale lock): the text goes to a temporary that is hard-linked into place."""
    tmp = temporary_beside(path)
    tmp.write_text(text)
    try:
        os.link(tmp, path)  # atomic, and fails if path exists
    except FileExistsError:
        raise
    except OSError:  # a filesystem without hard links: exclusive create, then write (a short window)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def run_directory_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``RUN_DIR/run.lock`` while the block runs; ConfigError naming the owner if a live run holds it."""
    path = Path(run_dir) / LOCK_FILE
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "command": sys.argv}
    for _ in range(2):  # the second try follows the removal of a stale lock
        try:
            _create_with(path, json.dumps(record))
        except FileExistsError:
            owner = _owner(path) or {}
            pid, host = owner.get("pid"), owner.get("host")
            if isinstance(pid, int) and host == record["host"] and process_alive(pid) and pid != os.getpid():
                since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started", 0)))
                raise ConfigError(
                    f"run directory {run_dir} is in use by another run (PID {pid}, started {since}); wait for it, "
                    f"or give this run its own hydra.run.dir"
                ) from None
            if isinstance(pid, int) and host not in (None, record["host"]):
                raise ConfigError(
                    f"run directory {run_dir} is locked by PID {pid} on host {host}; if that run is gone, remove "
                    f"{path} and start again"
                ) from None
            log.warning("removed the stale lock of PID %s (no such process): %s", pid, path)
            path.unlink(missing_ok=True)
            continue
        break
    try:
        yield
    finally:
        if (_owner(path) or {}).get("pid") == os.getpid():
            path.unlink(missing_ok=True)
