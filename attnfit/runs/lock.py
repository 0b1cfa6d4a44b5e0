"""One owner per run directory: a lock file held for the life of a run and released on exit; one left behind by a
run that died (a kill -9, a crashed machine) is taken over, with its owner named in the log."""

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
from typing import NoReturn

from attnfit.atomic import process_alive, temporary_beside
from attnfit.errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows: the lock falls back to the file's existence
    fcntl = None

LOCK_FILE = "run.lock"
log = logging.getLogger("attnfit")


def _owner(path: Path) -> dict | None:
    try:
        return _parse(path.read_bytes())
    except OSError:
        return None


def _parse(data: bytes) -> dict | None:
    try:
        owner = json.loads(data)
    except ValueError:
        return None  # half-written or empty: treated as stale
    return owner if isinstance(owner, dict) else None


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
    """Hold ``RUN_DIR/run.lock`` while the block runs; ConfigError naming the owner if a live run holds it.

    The lock is the kernel's (``flock``): a run that dies releases it with its last file descriptor, so a lock
    left behind is never mistaken for a live one, nor a live one removed as stale by two runs starting at once.
    Where the filesystem has no ``flock``, the file's existence is the lock, and its recorded PID tells stale."""
    path = Path(run_dir) / LOCK_FILE
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "command": sys.argv}
    fd = _flock(path, record) if fcntl is not None else None
    if fd is None:
        _link_lock(path, record)
    try:
        yield
    finally:
        if fd is not None:
            path.unlink(missing_ok=True)  # while still held: a run that opened this file then re-checks the path
            os.close(fd)
        elif (_owner(path) or {}).get("pid") == os.getpid():
            path.unlink(missing_ok=True)


def _flock(path: Path, record: dict) -> int | None:
    """The open, exclusively locked lock file holding ``record``; None where the filesystem refuses ``flock``."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            _refuse(_owner_soon(path), path.parent)
        except OSError:  # no flock here (some network filesystems)
            if os.fstat(fd).st_size == 0:  # the empty file this call created: the fallback would take it for stale
                path.unlink(missing_ok=True)
            os.close(fd)
            return None
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current != os.fstat(fd).st_ino:  # its owner removed the file as we opened it: lock the new one
            os.close(fd)
            continue
        previous = _parse(os.pread(fd, 1 << 16, 0))
        if previous:
            log.warning(
                "took over the stale lock of PID %s (it ended without releasing it): %s", previous.get("pid"), path
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        return fd


def _owner_soon(path: Path, wait: float = 1.0) -> dict:
    """The owner record of a held lock; a run that has just taken it writes its record a moment later."""
    deadline = time.monotonic() + wait
    while not (owner := _owner(path)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return owner or {}


def _refuse(owner: dict, run_dir: Path) -> NoReturn:
    pid = owner.get("pid")
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started", 0)))
    who = f" (PID {pid}, started {since})" if isinstance(pid, int) else ""
    raise ConfigError(
        f"run directory {run_dir} is in use by another run{who}; wait for it, or give this run its own hydra.run.dir"
    ) from None


def _link_lock(path: Path, record: dict) -> None:
    """The lock without ``flock``: the file's existence, its recorded PID telling a stale one from a live one."""
    for _ in range(2):  # the second try follows the removal of a stale lock
        try:
            _create_with(path, json.dumps(record))
        except FileExistsError:
            owner = _owner(path) or {}
            pid, host = owner.get("pid"), owner.get("host")
            if isinstance(pid, int) and host == record["host"] and process_alive(pid) and pid != os.getpid():
                _refuse(owner, path.parent)
            if isinstance(pid, int) and host not in (None, record["host"]):
                raise ConfigError(
                    f"run directory {path.parent} is locked by PID {pid} on host {host}; if that run is gone, remove "
                    f"{path} and start again"
                ) from None
            log.warning("removed the stale lock of PID %s (no such process): %s", pid, path)
            path.unlink(missing_ok=True)
            continue
        break
