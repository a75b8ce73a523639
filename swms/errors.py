"""Typed errors that cross the RPC boundary intact.

Every error a caller can act on is a ``SwmsError`` with a stable ``code`` (for programs), a Chinese
``message`` (for people) and, where one field is at fault, the ``field`` name. Nameko serialises
exceptions as ``{"exc_type", "exc_path", "exc_args", "value"}``; ``exc_args`` is
``[code, message, field, details]`` so that non-Python clients read the same four values and Python
clients get a ``SwmsError`` back (``deserialize_to_instance``).
"""
from __future__ import annotations

from typing import Any

from nameko.exceptions import deserialize_to_instance


@deserialize_to_instance
class SwmsError(Exception):
    def __init__(self, code: str, message: str, field: str | None = None,
                 details: list[dict[str, Any]] | None = None):
        # nameko turns None into the text "None" on the wire: send "" for "no field", read it back as None.
        field = field or None
        if field == "None":
            field = None
        super().__init__(code, message, field or "", details or [])
        self.code = code
        self.message = message
        self.field = field
        self.details = details or []

    def __str__(self) -> str:
        where = f" [{self.field}]" if self.field else ""
        return f"{self.code}{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "field": self.field,
                "details": self.details}


# Stable codes. Add, never rename: front ends and agencies branch on them.
VALIDATION_FAILED = "VALIDATION_FAILED"
ID_NUMBER_INVALID = "ID_NUMBER_INVALID"
PASSER_NOT_FOUND = "PASSER_NOT_FOUND"
NAME_MISMATCH = "NAME_MISMATCH"
ALREADY_REGISTERED = "ALREADY_REGISTERED"
LOGIN_FAILED = "LOGIN_FAILED"
ACCOUNT_DISABLED = "ACCOUNT_DISABLED"                    # right password, account stopped by an administrator
AUTH_REQUIRED = "AUTH_REQUIRED"
TOKEN_INVALID = "TOKEN_INVALID"
TOKEN_EXPIRED = "TOKEN_EXPIRED"
FORBIDDEN = "FORBIDDEN"
NOT_FOUND = "NOT_FOUND"
PROFILE_INCOMPLETE = "PROFILE_INCOMPLETE"
COMMITMENT_REQUIRED = "COMMITMENT_REQUIRED"
APPLICATION_ALREADY_OPEN = "APPLICATION_ALREADY_OPEN"
INVALID_STATE = "INVALID_STATE"
ALREADY_DECIDED = "ALREADY_DECIDED"
REASON_REQUIRED = "REASON_REQUIRED"
UPSTREAM_UNAVAILABLE = "UPSTREAM_UNAVAILABLE"
# certificate (issue 7)
CERTIFICATE_NOT_READY = "CERTIFICATE_NOT_READY"          # approved, being made: try again shortly
CERTIFICATE_NOT_ISSUED = "CERTIFICATE_NOT_ISSUED"        # approved, but the issue was refused (details say why)
VERIFICATION_TOKEN_FORGED = "VERIFICATION_TOKEN_FORGED"  # a QR token this system did not make
# review (issue 6): one item of a batch could not be saved (system failure); nothing changed for it
NOT_PROCESSED = "NOT_PROCESSED"
# identity (issue 3): passwords, rate limits, password reset, feedback (反馈)
PASSWORD_TOO_WEAK = "PASSWORD_TOO_WEAK"
RATE_LIMITED = "RATE_LIMITED"
RESET_CODE_INVALID = "RESET_CODE_INVALID"
CONFIRMATION_CODE_INVALID = "CONFIRMATION_CODE_INVALID"
FEEDBACK_ALREADY_PENDING = "FEEDBACK_ALREADY_PENDING"
ALREADY_IN_REGISTRY = "ALREADY_IN_REGISTRY"
REGISTRY_CONFLICT = "REGISTRY_CONFLICT"
# profile (issue 4): files, units, dates
FILE_TOO_LARGE = "FILE_TOO_LARGE"
FILE_TYPE_NOT_ALLOWED = "FILE_TYPE_NOT_ALLOWED"
FILE_DAMAGED = "FILE_DAMAGED"
PHOTO_DIMENSIONS_INVALID = "PHOTO_DIMENSIONS_INVALID"
UPLOAD_NOT_FOUND = "UPLOAD_NOT_FOUND"
UPLOAD_MISSING = "UPLOAD_MISSING"
UNIT_MUST_BE_CHOSEN = "UNIT_MUST_BE_CHOSEN"
UNIT_NOT_IN_DIRECTORY = "UNIT_NOT_IN_DIRECTORY"
PROOF_REQUIRED = "PROOF_REQUIRED"
DATE_INVALID = "DATE_INVALID"
REGION_CODE_INVALID = "REGION_CODE_INVALID"
CREDIT_CODE_INVALID = "CREDIT_CODE_INVALID"
LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
# registration (issue 5): eligibility and windows, editing, continuing education, paper certificates
FIRST_REGISTRATION_WINDOW_CLOSED = "FIRST_REGISTRATION_WINDOW_CLOSED"
ALREADY_HOLDS_CERTIFICATE = "ALREADY_HOLDS_CERTIFICATE"
NOT_REGISTERED = "NOT_REGISTERED"
RE_REGISTRATION_NOT_OPEN = "RE_REGISTRATION_NOT_OPEN"
REGISTRATION_LAPSED = "REGISTRATION_LAPSED"
CERTIFICATE_REVOKED = "CERTIFICATE_REVOKED"
CERTIFICATE_SUSPENDED = "CERTIFICATE_SUSPENDED"
REPLACEMENT_NOT_NEEDED = "REPLACEMENT_NOT_NEEDED"
NOT_PENDING_UPGRADE = "NOT_PENDING_UPGRADE"
APPLICATION_LOCKED = "APPLICATION_LOCKED"
ONLINE_HOURS_NOT_TYPED = "ONLINE_HOURS_NOT_TYPED"
CE_HOURS_SHORT = "CE_HOURS_SHORT"
CE_COURSE_NOT_FINISHED = "CE_COURSE_NOT_FINISHED"
CE_COURSE_OUTSIDE_PERIOD = "CE_COURSE_OUTSIDE_PERIOD"
PROOF_NOT_FOUND = "PROOF_NOT_FOUND"
PROOF_ALREADY_USED = "PROOF_ALREADY_USED"
ORIGINAL_NO_INVALID = "ORIGINAL_NO_INVALID"
ORIGINAL_NO_IN_USE = "ORIGINAL_NO_IN_USE"
ORIGINAL_EXPIRED = "ORIGINAL_EXPIRED"
PROFILE_CHANGED = "PROFILE_CHANGED"
# free text anywhere (swms/text.py): a control, bidi, invisible, private-use or unassigned character, or an emoji
TEXT_CHARACTERS_NOT_ALLOWED = "TEXT_CHARACTERS_NOT_ALLOWED"


def validation_error(field: str, message: str) -> SwmsError:
    return SwmsError(VALIDATION_FAILED, message, field,
                     [{"field": field, "code": VALIDATION_FAILED, "message": message}])


def auth_required() -> SwmsError:
    return SwmsError(AUTH_REQUIRED, "请先登录", "auth_token")


def forbidden(message: str = "无权执行此操作") -> SwmsError:
    return SwmsError(FORBIDDEN, message)


def not_found(what: str, field: str | None = None) -> SwmsError:
    return SwmsError(NOT_FOUND, f"{what}不存在", field)
