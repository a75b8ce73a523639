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

# The stable codes live in swms.error_codes (no Nameko import there, for the asyncio gateway);
# every one is re-exported here, so ``errors.NOT_FOUND`` keeps working everywhere.
from swms.error_codes import *  # noqa: F401,F403
from swms.error_codes import AUTH_REQUIRED, FORBIDDEN, NOT_FOUND, VALIDATION_FAILED


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


def validation_error(field: str, message: str) -> SwmsError:
    return SwmsError(VALIDATION_FAILED, message, field,
                     [{"field": field, "code": VALIDATION_FAILED, "message": message}])


def auth_required() -> SwmsError:
    return SwmsError(AUTH_REQUIRED, "请先登录", "auth_token")


def forbidden(message: str = "无权执行此操作") -> SwmsError:
    return SwmsError(FORBIDDEN, message)


def not_found(what: str, field: str | None = None) -> SwmsError:
    return SwmsError(NOT_FOUND, f"{what}不存在", field)
