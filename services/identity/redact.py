"""A logging filter that masks resident ID numbers in every record identity's handlers write.

The code never logs a full ID number on purpose; this is the last line of defence for text that
others compose: a database error quoting a duplicate key, a traceback, a library's debug line.
Configured on the handler in config.yaml (``filters: [redact_id_numbers]``).
"""
from __future__ import annotations

import logging
import traceback

from swms.logs import mask_id_numbers  # one pattern for every log line the system writes


class RedactIdNumbers(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:   # a broken format string: leave it to the handler to report
            return True
        masked = mask_id_numbers(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if record.exc_text:
            record.exc_text = mask_id_numbers(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_id_numbers(record.stack_info)
        return True
