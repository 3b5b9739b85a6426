"""Errors of the pf.conf front end, worded as FreeBSD's pfctl words them.

pfctl reports a bad rule as ``FILE:LINE: message`` and then gives up on the file; the front
ends print ``str(error)`` on one line. Nothing here prints or exits.
"""

from __future__ import annotations

from pfha.errors import SourceError


class ParseError(SourceError):
    """The ruleset cannot be loaded. ``messages`` holds every line pfctl would have printed
    (errors and warnings, in order) before giving up, ``str()`` the first error."""

    def __init__(
        self,
        message: str,
        filename: str | None = None,
        line: int | None = None,
        *,
        messages: tuple[str, ...] = (),
        output: str = "",
    ) -> None:
        super().__init__(message, filename, line)
        self.messages = messages or (str(self),)
        #: everything pfctl -nv would have printed before failing (stdout+stderr, in order)
        self.output = output
