"""User-facing errors: one clear line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

EXIT_BAD_INPUT = 2


class AdvxError(Exception):
    """Bad input the user can fix (config, data, checkpoint). The CLI prints the message and exits 2."""


class ConfigError(AdvxError):
    """A config value of the wrong type or out of range, or an unknown key or option."""


class DataError(AdvxError):
    """A dataset that cannot be found or read."""


class CheckpointError(AdvxError):
    """A run dir without a checkpoint, or a checkpoint that does not match its model."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty), for one-line errors."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
