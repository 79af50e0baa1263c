"""The gateway's own log lines — and its servers' — in one format, on stderr.

``GATEWAY_LOG_FORMAT=text`` (the default) is for people; ``json`` is one object per line
for log pipelines. Granian's and Robyn's loggers write through the same handler. (The
access log is separate: one JSON line per request, on stdout by default; accesslog.py.)
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import msgspec

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")
# The servers' own loggers: Granian's (Python and Rust), Robyn's and actix's (Rust, via pyo3).
SERVER_LOGGERS = ("_granian", "granian", "robyn", "actix_server", "actix_http")

_encode = msgspec.json.Encoder().encode


class JSONFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message"}`` (and ``error``, with a traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return _encode(entry).decode()


def formatter(log_format: str) -> logging.Formatter:
    return JSONFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure_logging(level: str, log_format: str = "text") -> None:
    """One stderr handler for the gateway's and the servers' loggers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)  # libraries: warnings and worse
    gateway = logging.getLogger("gateway")
    gateway.handlers[:] = []
    gateway.setLevel(level.upper())
    gateway.propagate = True
    for name in SERVER_LOGGERS:
        server = logging.getLogger(name)
        server.handlers[:] = []
        server.propagate = True


def granian_log_config(log_format: str) -> dict[str, Any]:
    """Granian's ``log_dictconfig``: its loggers through the gateway's format, on stderr."""
    factory = f"{__name__}.JSONFormatter" if log_format == "json" else "logging.Formatter"
    generic: dict[str, Any] = {"()": factory}
    if log_format != "json":
        generic["fmt"] = TEXT_FORMAT
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"generic": generic, "access": generic},
        "handlers": {
            "console": {
                "formatter": "generic",
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
            },
            "access": {
                "formatter": "access",
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
            },
        },
        "loggers": {
            "_granian": {"handlers": ["console"], "level": "INFO", "propagate": False},
            "granian.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
    }
