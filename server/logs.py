"""Structured logs: one line per event with ``key=value`` fields (``session=<id>``), or JSON lines.

``setup_logging(level, fmt)`` configures the root logger; ``SessionLog`` is a ``LoggerAdapter`` that
prefixes ``session=<id>`` (text) and adds a ``session`` field (JSON).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

NOISY = ("aioice", "aiortc", "websockets")


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "session"?, "exc"?}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        session = getattr(record, "session", None)
        if session is not None:
            entry["session"] = session
        if record.exc_info:
            entry["exc"] = " | ".join(self.formatException(record.exc_info).splitlines()[-3:])
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time level logger: message`` with tracebacks folded onto the same line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return " | ".join(super().format(record).splitlines())


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class SessionLog(logging.LoggerAdapter):
    """Logs ``session=<id> message`` and carries ``session`` as a record field."""

    def __init__(self, logger: logging.Logger, session_id: str) -> None:
        super().__init__(logger, {"session": session_id})

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs.setdefault("extra", {}).update(self.extra)
        return f"session={self.extra['session']} {msg}", kwargs
