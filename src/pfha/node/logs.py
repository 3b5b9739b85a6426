"""Structured logs for the node: one JSON object per line on stderr (journald keeps them as is).

``log.info("carp state", extra=fields(vhid=1, state="MASTER"))`` writes
``{"ts": ..., "level": "info", "logger": "pfha.node", "msg": "carp state", "vhid": 1, ...}``.
``--log-format text`` gives the same fields as ``key=value`` for a terminal.
"""

from __future__ import annotations

import json
import logging
import sys
import time


def fields(**values: object) -> dict:
    """The ``extra=`` argument carrying structured fields."""
    return {"fields": values}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in getattr(record, "fields", {}).items())
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        text = f"{stamp} {record.levelname.lower():7} {record.name}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return f"{text} {extra}".rstrip()


def setup(fmt: str = "json", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("pfha")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
