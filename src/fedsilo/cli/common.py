"""What every command shares: the user-error type, the exit code and the progress reporter."""

from __future__ import annotations

from typing import Any

EXIT_USER_ERROR = 2


class UsageError(Exception):
    """A bad command-line value (reported like other user errors: one line, exit code 2)."""


def reporter(tty: bool) -> Any:
    from fedsilo.progress import Reporter, RichReporter

    return RichReporter() if tty else Reporter()
