"""Warnings for people: each distinct warning once, with the places it applies to.

A generated 10,000-rule pf.conf earns the same approximation warning ("modulate state: compiled
as keep state ...") on hundreds of rules; printed one per rule, 1,800 lines of four sentences
bury the one warning that matters. Every command that prints warnings (``pfha check``, ``pfha
load``, ``pfha test``, ``pfctl -n``) and the node daemon's reload log go through
:func:`warning_lines`, so they all group the same way:

    pfha: warning: /tmp/r.conf:10008, 10020, 10032 and 452 more lines: modulate state: ...

One line per distinct message, in the order the messages first occur; the message text is
untouched (grep for it), and so is the first place. A message that occurs at one place only
prints exactly as it always did. ``verbose`` gives every occurrence, one per line, as before.

Warnings are :class:`pfha.nft.compile.Warning` values (``message`` and ``where``) or strings
(the optimizer's, and the ``FILE:LINE: message`` lines of a load): both are read here. Pure:
nothing here prints except :func:`print_warnings`, to the stream it is given.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Iterable, TextIO

#: places written before "and N more": enough to find the first ones, short enough for a line
SHOWN = 3

_PLACED = re.compile(r"(?P<where>[^\s:][^:]*:\d+): (?P<message>.+)\Z", re.S)


def split(warning: object) -> tuple[str, str]:
    """``(where, message)`` of one warning; ``where`` is ``FILE:LINE`` or ''."""
    message = getattr(warning, "message", None)
    if isinstance(message, str):
        return getattr(warning, "where", "") or "", message
    text = str(warning)
    placed = _PLACED.match(text)
    return (placed["where"], placed["message"]) if placed else ("", text)


@dataclass(frozen=True)
class WarningGroup:
    """One distinct message and every place it was given for."""

    message: str
    places: tuple[str, ...]  # distinct FILE:LINE places, first occurrence first
    occurrences: int  # warnings grouped here, repeats at one place included

    def __str__(self) -> str:
        if not self.places:
            return self.message
        return f"{format_places(self.places)}: {self.message}"


def group_warnings(warnings: Iterable[object]) -> list[WarningGroup]:
    """The warnings grouped by message text, in the order each message first occurs."""
    places: dict[str, dict[str, None]] = {}  # message -> places (an ordered set)
    counts: dict[str, int] = {}
    for warning in warnings:
        where, message = split(warning)
        seen = places.setdefault(message, {})
        if where:
            seen[where] = None
        counts[message] = counts.get(message, 0) + 1
    return [WarningGroup(message, tuple(seen), counts[message]) for message, seen in places.items()]


def format_places(places: tuple[str, ...] | list[str], shown: int = SHOWN) -> str:
    """``r.conf:10008, 10020, 10032 and 1,663 more lines``: the file is written again only
    when it changes, and "and 1 more line" is never said (that line is shown instead)."""
    if len(places) <= shown + 1:
        shown = len(places)
    parts: list[str] = []
    last_file = None
    for where in places[:shown]:
        file, colon, line = where.rpartition(":")
        numbered = bool(colon) and line.isdigit()
        parts.append(line if numbered and file == last_file else where)
        last_file = file if numbered else None
    text = ", ".join(parts)
    rest = len(places) - shown
    if rest:
        text += f" and {rest:,} more lines"
    return text


def warning_lines(warnings: Iterable[object], verbose: bool = False) -> list[str]:
    """What to print for ``warnings``: one line per distinct message, or with ``verbose`` one
    per warning exactly as given."""
    if verbose:
        return [str(warning) for warning in warnings]
    return [str(group) for group in group_warnings(warnings)]


def print_warnings(warnings: Iterable[object], prefix: str = "pfha: warning: ", verbose: bool = False,
                   stream: TextIO | None = None) -> None:
    """Write :func:`warning_lines` to ``stream`` (stderr), each line after ``prefix``."""
    stream = stream or sys.stderr
    for line in warning_lines(warnings, verbose):
        stream.write(f"{prefix}{line}\n")
    stream.flush()
