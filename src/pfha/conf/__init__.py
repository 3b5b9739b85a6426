"""pf.conf: read FreeBSD's pf.conf exactly as pfctl does, and print it back as pfctl -nv does.

Public API (names are stable; fields are only ever added):

- :class:`InterfaceView` - interface name -> addresses, injected (``--if`` specs, live host,
  FreeBSD's lo0 defaults);
- :func:`parse_file` / :func:`parse_text` -> :class:`Ruleset` (typed, immutable, expanded);
- :func:`format_ruleset` - exactly what ``pfctl -o none -nvf`` prints; :func:`format_rule` -
  one rule as pfctl prints it;
- :class:`ParseError` - a ``FILE:LINE: message`` error.

Nothing in this package touches the OS except :mod:`pfha.conf.live` (the live interface view)
and reading the files a ruleset names (``include``, ``table ... file``).
"""

from __future__ import annotations

from pfha.conf.ast import (
    AnchorRule,
    EtherRule,
    Macro,
    Options,
    Origin,
    Queue,
    Rule,
    Ruleset,
    ScrubRule,
    SetOption,
    Table,
    TranslationRule,
)
from pfha.conf.errors import ParseError
from pfha.conf.interfaces import InterfaceView


def parse_text(text: str, filename: str = "pf.conf", interfaces: InterfaceView | None = None, **kwargs) -> Ruleset:
    """Parse pf.conf text (see :func:`pfha.conf.parser.parse_text`)."""
    from pfha.conf.parser import parse_text as _parse_text

    return _parse_text(text, filename, interfaces, **kwargs)


def parse_file(path, interfaces: InterfaceView | None = None, *, include_base=None, **kwargs) -> Ruleset:
    """Parse a pf.conf file; relative ``include``/``file`` paths resolve from ``include_base``
    (default: the current directory, as pfctl does)."""
    from pfha.conf.parser import parse_file as _parse_file

    return _parse_file(path, interfaces, include_base=include_base, **kwargs)


def format_ruleset(ruleset: Ruleset, verbose: int = 1) -> str:
    """What ``pfctl -o none -nvf`` prints for the ruleset."""
    from pfha.conf.printer import format_ruleset as _format_ruleset

    return _format_ruleset(ruleset, verbose=verbose)


def format_rule(rule, verbose: int = 1) -> str:
    """One rule as pfctl prints it (no trailing newline)."""
    from pfha.conf.printer import format_rule as _format_rule

    return _format_rule(rule, verbose=verbose)


__all__ = [
    "AnchorRule",
    "EtherRule",
    "InterfaceView",
    "Macro",
    "Options",
    "Origin",
    "ParseError",
    "Queue",
    "Rule",
    "Ruleset",
    "ScrubRule",
    "SetOption",
    "Table",
    "TranslationRule",
    "format_rule",
    "format_ruleset",
    "parse_file",
    "parse_text",
]
