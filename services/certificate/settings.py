"""The certificate service's numeric settings, each with its range: checked when the service
starts (a bad value stops it there, naming the variable) and read through ``NUMBERS.get``."""
from __future__ import annotations

import datetime as dt

from swms.config import Number, Numbers
from swms.throttle import Limit

NUMBERS = Numbers("certificate", {
    "CERT_VALIDITY_YEARS": Number(3, 1, 10),
    "CERT_RENDER_PROCESSES": Number(0, 0, 64),                  # 0: one per CPU core
    "CERT_ISSUE_LEASE_SECONDS": Number(120, 1, 3600, whole=False),
    "CERT_RETRY_POLL_SECONDS": Number(10, 0.1, 3600, whole=False),
    "CERT_RETRY_MAX_SECONDS": Number(900, 1, 86400, whole=False),
    "CERT_EXPIRY_CHECK_SECONDS": Number(3600, 0.1, 86400, whole=False),
    # How long a render worker waits for the time-stamping authority (CERT_TSA_URL) per PDF.
    "CERT_TSA_TIMEOUT_SECONDS": Number(10, 0.5, 120, whole=False),
    # Public verification (verify_certificate): requests per client address, lookups by number in
    # all, both per window; reaching one refuses until the window ends.
    "CERT_VERIFY_MAX_PER_ADDRESS": Number(30, 1, 100_000),
    "CERT_VERIFY_MAX_BY_NUMBER": Number(3000, 1, 10_000_000),
    "CERT_VERIFY_WINDOW_SECONDS": Number(600, 1, 86400),
})


def verify_limits(config: dict) -> tuple[Limit, Limit]:
    """(per client address, all lookups by number together)."""
    window = dt.timedelta(seconds=NUMBERS.get(config, "CERT_VERIFY_WINDOW_SECONDS"))
    return (Limit("verify-src", NUMBERS.get(config, "CERT_VERIFY_MAX_PER_ADDRESS"), window, window),
            Limit("verify-number", NUMBERS.get(config, "CERT_VERIFY_MAX_BY_NUMBER"), window, window))
