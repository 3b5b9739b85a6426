"""Reading a text file the user named (a node config, an rc.conf, a packet scenario).

The one place where "cannot open" and "not UTF-8 text" become a one-line :class:`SourceError`
naming the file, so that no front end prints a traceback for a wrong path or a binary file.
(pf.conf itself is read as bytes by the parser, as pfctl reads it.)
"""

from __future__ import annotations

from pathlib import Path

from pfha.errors import SourceError


def read_text(path: str | Path, what: str = "", error_class: type[SourceError] = SourceError) -> str:
    """The file's text; ``what`` names it in the error ("node config": "cannot read node config"),
    raised as ``error_class`` (a concept's own SourceError subclass)."""
    prefix = f"cannot read {what}" if what else "cannot read"
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise error_class(f"{prefix}: {error.strerror or error}", str(path)) from None
    except UnicodeDecodeError as error:
        raise error_class(f"{prefix}: not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset "
                          f"{error.start})", str(path)) from None
