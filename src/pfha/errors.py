"""The one exception family every front end turns into a one-line message and an exit status.

Anything a user can get wrong (a file, a flag, a ruleset, a node config) raises a subclass of
:class:`PfhaError`; the CLI prints ``str(error)`` on one line and exits non-zero, never a
traceback. Subclasses live with the concept they describe (``conf.errors``, ...).
"""

from __future__ import annotations


class PfhaError(Exception):
    """A user-facing error: its ``str()`` is the whole message, ready to print."""

    exit_status: int = 1


class SourceError(PfhaError):
    """An error tied to a place in a file: printed as ``FILE:LINE: message``."""

    def __init__(self, message: str, filename: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.filename = filename
        self.line = line

    def __str__(self) -> str:
        if self.filename is None:
            return self.message
        if self.line is None:
            return f"{self.filename}: {self.message}"
        return f"{self.filename}:{self.line}: {self.message}"
