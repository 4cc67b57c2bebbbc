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


class DamagedFile(AdvxError):
    """A file advx wrote (or was pointed at) that cannot be read back: truncated, unparsable, empty, or not a
    plain tensor file. `path` names it, so a caller that can rebuild it (the stage store) may do so."""

    def __init__(self, path, message: str):
        super().__init__(message)
        self.path = path


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty), for one-line errors."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def os_error_line(error: OSError) -> str:
    """An OSError (a file that cannot be read or written, a full disk) as one line naming the file."""
    where = f": {shown(error.filename)}" if error.filename else ""
    return f"{error.strerror or first_line(error)}{where}"


def shown(path, limit: int = 120) -> str:
    """A path for an error line: whole when short, else its start and end around an ellipsis."""
    text = str(path)
    return text if len(text) <= limit else f"{text[:limit // 2 - 2]}...{text[-(limit // 2 - 2):]}"
