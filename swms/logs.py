"""Structured JSON logs with a correlation id that follows a request across services.

The correlation id is the Nameko call id of the first call in the chain (``origin_call_id``):
Nameko forwards the call-id stack in message headers, so every service touched by one front-end
request logs the same id. Resident ID numbers are masked in every message as a last line of defence.

In config.yaml:
    LOGGING: {formatters: {json: {(): swms.logs.JsonFormatter}}, handlers: {console: {formatter: json, ...}}}
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading

_context = threading.local()  # green-thread local once eventlet has monkey-patched threading
_ID_NUMBER = re.compile(r"(?<![0-9])([1-9]\d{2})\d{11}(\d{3}[0-9Xx])(?![0-9A-Za-z])")


def set_correlation(correlation_id: str | None, call_id: str | None) -> None:
    # one attribute: every set of a green-thread local looks the green thread up (twice per RPC)
    _context.ids = (correlation_id, call_id)


def mask_id_numbers(text: str) -> str:
    return _ID_NUMBER.sub(lambda m: m.group(1) + "*" * 11 + m.group(2), text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        correlation_id, call_id = getattr(_context, "ids", (None, None))
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": mask_id_numbers(record.getMessage()),
            "correlation_id": correlation_id,
            "call_id": call_id,
        }
        if record.exc_info:
            entry["exception"] = mask_id_numbers(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)
