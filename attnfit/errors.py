"""User-facing errors: one clear message, no traceback wall.

Entry points catch :class:`AttnfitError` and print ``str(error)``; everything else is a bug.
"""

from __future__ import annotations

import difflib
import errno
import shutil
from collections.abc import Iterable
from pathlib import Path


class AttnfitError(Exception):
    """A mistake in the user's config, data or files, explained in one message."""


class ConfigError(AttnfitError):
    """A config value that cannot work."""


class DataError(AttnfitError):
    """Data that is missing, empty or malformed."""


class NumericalError(AttnfitError):
    """Training produced NaN or Inf."""


class CheckpointError(AttnfitError):
    """A checkpoint or exported model that cannot be loaded as asked."""


class TrainingInterrupted(AttnfitError):
    """SIGTERM or Ctrl-C stopped training after a checkpoint was saved; not a mistake, so its own exit code."""

    def __init__(self, message: str, signal_name: str) -> None:
        super().__init__(message)
        self.exit_code = 130 if signal_name == "SIGINT" else 143  # the shell's 128 + signal number


def choice_error(
    what: str, value: object, choices: Iterable[str], cls: type[AttnfitError] = ConfigError
) -> AttnfitError:
    """Build an error naming the bad ``value`` of ``what``, the valid choices and the closest one."""
    choices = sorted(choices)
    message = f"unknown {what} {value!r}; valid choices: {', '.join(choices)}"
    close = difflib.get_close_matches(str(value), choices, n=1)
    if close:
        message += f" (did you mean {close[0]!r}?)"
    return cls(message)


def check_choice(what: str, value: object, choices: Iterable[str], cls: type[AttnfitError] = ConfigError) -> None:
    """Raise :func:`choice_error` unless ``value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise choice_error(what, value, choices, cls)


def check_fraction(what: str, value: float) -> None:
    """ConfigError unless ``0 ≤ value < 1`` (a dropout rate, a label-smoothing weight)."""
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{what}={value} must be in [0, 1)")


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # the errnos of a write that found no space


def disk_is_full(directory: str | Path, error: BaseException | None = None) -> bool:
    """Whether the disk of ``directory`` is full: ``error`` (raised while writing there) is an ENOSPC/EDQUOT
    OSError, or less than 1 MiB is left (a library's own error: torch's zip writer, safetensors)."""
    if isinstance(error, OSError) and error.errno in DISK_FULL:
        return True
    try:
        return shutil.disk_usage(directory).free < 1 << 20
    except OSError:
        return False
