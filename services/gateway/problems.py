"""Error codes to HTTP statuses, and the problem+json body (RFC 9457) every refusal gets.

One table: a code's status never depends on the route. A code the table does not know (a code
added to a service after this gateway was built, an unexpected exception) is answered as 500
INTERNAL_ERROR with a generic message: no stack trace, exception type or module path reaches a
client. The original is logged with the request id.
"""
from __future__ import annotations

from http import HTTPStatus
from typing import Any

from swms import error_codes as c

GENERIC_MESSAGE = "系统错误，请稍后重试"

_BY_STATUS: dict[int, tuple[str, ...]] = {
    401: (c.AUTH_REQUIRED, c.TOKEN_INVALID, c.TOKEN_EXPIRED, c.LOGIN_FAILED),
    403: (c.FORBIDDEN, c.ACCOUNT_DISABLED),
    404: (c.NOT_FOUND, c.PASSER_NOT_FOUND, c.UPLOAD_NOT_FOUND, c.PROOF_NOT_FOUND),
    405: (c.METHOD_NOT_ALLOWED,),
    409: (c.ALREADY_REGISTERED, c.APPLICATION_ALREADY_OPEN, c.INVALID_STATE, c.ALREADY_DECIDED,
          c.FEEDBACK_ALREADY_PENDING, c.ALREADY_IN_REGISTRY, c.REGISTRY_CONFLICT, c.UPLOAD_MISSING,
          c.PROFILE_INCOMPLETE, c.FIRST_REGISTRATION_WINDOW_CLOSED, c.ALREADY_HOLDS_CERTIFICATE,
          c.NOT_REGISTERED, c.RE_REGISTRATION_NOT_OPEN, c.REGISTRATION_LAPSED, c.CERTIFICATE_REVOKED,
          c.CERTIFICATE_SUSPENDED, c.REPLACEMENT_NOT_NEEDED, c.NOT_PENDING_UPGRADE, c.APPLICATION_LOCKED,
          c.PROOF_ALREADY_USED, c.ORIGINAL_NO_IN_USE, c.ORIGINAL_EXPIRED, c.PROFILE_CHANGED,
          c.CERTIFICATE_NOT_READY, c.CERTIFICATE_NOT_ISSUED, c.LIMIT_EXCEEDED),
    413: (c.FILE_TOO_LARGE, c.REQUEST_TOO_LARGE),
    422: (c.VALIDATION_FAILED, c.ID_NUMBER_INVALID, c.NAME_MISMATCH, c.PASSWORD_TOO_WEAK,
          c.COMMITMENT_REQUIRED, c.REASON_REQUIRED, c.RESET_CODE_INVALID, c.CONFIRMATION_CODE_INVALID,
          c.FILE_TYPE_NOT_ALLOWED, c.FILE_DAMAGED, c.PHOTO_DIMENSIONS_INVALID, c.UNIT_MUST_BE_CHOSEN,
          c.UNIT_NOT_IN_DIRECTORY, c.PROOF_REQUIRED, c.DATE_INVALID, c.REGION_CODE_INVALID,
          c.CREDIT_CODE_INVALID, c.ONLINE_HOURS_NOT_TYPED, c.CE_HOURS_SHORT, c.CE_COURSE_NOT_FINISHED,
          c.CE_COURSE_OUTSIDE_PERIOD, c.ORIGINAL_NO_INVALID, c.VERIFICATION_TOKEN_FORGED),
    429: (c.RATE_LIMITED,),
    # METHOD_NOT_FOUND reaching the gateway means it and a service disagree on a method: our fault,
    # and its message names an internal method, so the client gets the generic 500.
    500: (c.INTERNAL_ERROR, c.METHOD_NOT_FOUND),
    503: (c.UPSTREAM_UNAVAILABLE, c.NOT_PROCESSED),
    504: (c.UPSTREAM_TIMEOUT,),
}
STATUS_BY_CODE: dict[str, int] = {code: status for status, codes in _BY_STATUS.items() for code in codes}


class Problem(Exception):
    """A refusal on its way to the client: raised anywhere in a request, rendered once."""

    def __init__(self, code: str, message: str, field: str | None = None,
                 details: list[dict[str, Any]] | None = None, retry_after: int | None = None):
        if STATUS_BY_CODE.get(code, 500) == 500:   # unknown or internal: never echo it or its words
            code, message, field, details = c.INTERNAL_ERROR, GENERIC_MESSAGE, None, None
        super().__init__(code, message)
        self.code, self.message = code, message
        self.field = field or None
        self.details = details or []
        self.status = STATUS_BY_CODE[code]
        self.retry_after = retry_after if retry_after is not None else _retry_after(code, self.details)

    def body(self, request_id: str, instance: str | None = None) -> dict[str, Any]:
        return {"type": f"urn:swms:error:{self.code}", "title": HTTPStatus(self.status).phrase,
                "status": self.status, "detail": self.message, "code": self.code, "message": self.message,
                "field": self.field, "details": self.details, "request_id": request_id, "instance": instance}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


def _retry_after(code: str, details: list[dict[str, Any]]) -> int | None:
    """Seconds for Retry-After: RATE_LIMITED carries them in details[0].retry_after_seconds (as text:
    Nameko stringifies scalars in errors); an unavailable upstream is worth a retry shortly."""
    if code == c.RATE_LIMITED:
        for item in details:
            try:
                return max(1, int(float(item.get("retry_after_seconds"))))
            except (TypeError, ValueError, AttributeError):
                continue
        return 60
    if code in (c.UPSTREAM_UNAVAILABLE, c.NOT_PROCESSED):
        return 5
    return None


def internal_error() -> Problem:
    return Problem(c.INTERNAL_ERROR, GENERIC_MESSAGE)


def validation(field: str, message: str, reason: str = "invalid") -> Problem:
    return Problem(c.VALIDATION_FAILED, message, field,
                   [{"field": field, "code": c.VALIDATION_FAILED, "message": message, "reason": reason}])
