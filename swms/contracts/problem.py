"""The HTTP gateway's error body: RFC 9457 ``application/problem+json`` carrying the same four
values an RPC caller gets in a ``SwmsError`` (code, Chinese message, field, details)."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Problem(BaseModel):
    model_config = ConfigDict(extra="allow", title="Problem")

    type: str = Field(description="urn:swms:error:<code>")
    title: str = Field(description="the HTTP status phrase")
    status: int = Field(ge=400, le=599)
    detail: str = Field(description="Chinese sentence to show the person (same as message)")
    code: str = Field(description="stable, English: branch on it (docs/contracts.md lists every code)")
    message: str = Field(description="Chinese sentence to show the person")
    field: str | None = Field(default=None, description="the request field at fault (dotted path), or null")
    details: list[dict[str, Any]] = Field(
        default_factory=list, description="validation failures: one {field, code, message, reason} per bad field")
    request_id: str = Field(description="the X-Request-ID of this request (quote it when asking for help)")
    instance: str | None = Field(default=None, description="the request path")
