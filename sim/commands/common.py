"""What every ``tiosim`` subcommand shares: exit codes, the user-error type, file reading."""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and found a failure (a message that does not decode, an expectation)
EXIT_USAGE = 2   # the user's input was unusable (missing file, bad option value)


class UserError(Exception):
    """A problem with what the user gave us, reported as one line without a traceback."""


def read_text(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def read_bytes(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror}") from None
