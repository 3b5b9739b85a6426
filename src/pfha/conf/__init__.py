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

Speed: the modules in :data:`COMPILED_MODULES` may be compiled with mypyc at install time
(``setup.py``) from these same sources. They are used only when all are present and newer
than their sources; otherwise, or with ``PFHA_CONF_PURE=1`` in the environment, the ``.py``
files are imported. :func:`implementation` says which is in use. This module itself is never
compiled: it must be able to choose.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

#: the hot modules setup.py compiles with mypyc (one group: they call each other natively)
COMPILED_MODULES = ("lexer", "parser", "expand", "printer")
#: the shared library mypyc builds for them (setup.py's group_name)
_NATIVE_GROUP = "pfha_conf_native__mypyc"

_HERE = os.path.dirname(os.path.abspath(__file__))


def _compiled_state() -> str:
    """"compiled", or why the sources are used (no build, a stale build, PFHA_CONF_PURE)."""
    if os.environ.get("PFHA_CONF_PURE", "") not in ("", "0"):
        return "PFHA_CONF_PURE set"
    for name in COMPILED_MODULES:
        if not any(os.path.exists(os.path.join(_HERE, name + suffix)) for suffix in importlib.machinery.EXTENSION_SUFFIXES):
            return "no compiled build"
    # the per-module files are stubs that are not relinked when unchanged: the group's shared
    # library is what a rebuild renews, so it is what must be newer than every source
    try:
        spec = importlib.util.find_spec(_NATIVE_GROUP)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        return "no compiled build"
    built = os.path.getmtime(spec.origin)
    for name in COMPILED_MODULES:
        if os.path.getmtime(os.path.join(_HERE, name + ".py")) > built:
            return f"compiled build older than {name}.py: reinstall to rebuild"
    return "compiled"


class _SourceFinder:
    """Imports the listed modules from their .py files even where a compiled build sits beside
    them (the import system would otherwise prefer the extension module)."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        package, _, module = name.rpartition(".")
        if package != __name__ or module not in COMPILED_MODULES:
            return None
        return importlib.util.spec_from_file_location(name, os.path.join(_HERE, module + ".py"))


_STATE = _compiled_state()
if _STATE != "compiled":
    sys.meta_path.insert(0, _SourceFinder())


def implementation() -> str:
    """Which pf.conf front end is running: ``compiled (mypyc)`` or ``pure Python (why)``."""
    from pfha.conf import parser

    if _STATE == "compiled" and not parser.__file__.endswith(".py"):
        return "compiled (mypyc)"
    return f"pure Python ({_STATE if _STATE != 'compiled' else 'compiled build not loaded'})"

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
    "COMPILED_MODULES",
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
    "implementation",
    "parse_file",
    "parse_text",
]
