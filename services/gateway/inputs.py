"""From an HTTP request to the one JSON object an RPC takes, refusing what is malformed with the
same codes and Chinese messages the services give (swms.validation), before anything is sent.

- JSON bodies: ``application/json`` (or ``+json``) in UTF-8, one object, no duplicate keys, no
  NaN/Infinity, within the byte limit (413 REQUEST_TOO_LARGE), not repeating a path field.
- Query strings: each field at most once, text turned into the JSON type the contract declares
  (``page=2`` → 2, ``include_retrying=false`` → false), so strict contracts accept them.
- The object is validated against the RPC's request model; for bodies what the client sent is
  forwarded unchanged (the service validates again and owns any normalisation).
"""
from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request

from services.gateway.operations import Operation
from services.gateway.problems import Problem, validation
from swms import error_codes as c
from swms.validation import validation_problem

_JSON_MEDIA = re.compile(r"^application/([a-z0-9.+-]+\+)?json$")
_INTEGER = re.compile(r"^-?\d{1,18}$")
_NUMBER = re.compile(r"^-?\d{1,18}(\.\d{1,18})?$")


def too_large(limit: int) -> Problem:
    return Problem(c.REQUEST_TOO_LARGE, f"请求内容过大（上限 {limit // 1024} KB）", "body")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it passes ``limit`` (Content-Length or the bytes themselves)."""
    lengths = request.headers.getlist("content-length")
    if len(lengths) > 1 or (lengths and not lengths[0].isdigit()):
        raise validation("Content-Length", "请求头 Content-Length 不正确")
    if lengths and int(lengths[0]) > limit:
        raise too_large(limit)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise validation("body", "请求体不完整") from None
    return b"".join(chunks)


def _reject_constant(name: str):
    raise ValueError(name)


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key}")
        result[key] = value
    return result


def parse_json_object(request: Request, raw: bytes) -> dict[str, Any]:
    types = request.headers.getlist("content-type")
    if not raw:
        raise validation("body", "请求体不能为空，应为 JSON 对象", "missing")
    if len(types) != 1:
        raise validation("Content-Type", "请求头 Content-Type 应为 application/json", "content_type")
    media, _, params = types[0].partition(";")
    charset = re.search(r"charset\s*=\s*\"?([\w-]+)", params, re.I)
    if not _JSON_MEDIA.match(media.strip().lower()) or (charset and charset.group(1).lower() not in ("utf-8", "utf8")):
        raise validation("Content-Type", "请求头 Content-Type 应为 application/json（UTF-8）", "content_type")
    try:
        data = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_object, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise validation("body", "请求体不是有效的 JSON", "json_invalid") from None
    if not isinstance(data, dict):
        raise validation("body", "请求体应为 JSON 对象", "model_type")
    return data


def _json_types(schema: dict[str, Any], components: dict[str, Any]) -> set[str]:
    if "$ref" in schema:
        return _json_types(components.get(schema["$ref"].rsplit("/", 1)[-1], {}), components)
    kinds = set()
    if "type" in schema:
        kinds |= set(schema["type"]) if isinstance(schema["type"], list) else {schema["type"]}
    for option in schema.get("anyOf", []) + schema.get("oneOf", []) + schema.get("allOf", []):
        kinds |= _json_types(option, components)
    return kinds


def coerce_query(value: str, schema: dict[str, Any], components: dict[str, Any]) -> Any:
    """A query string's text as the JSON value its schema declares (else left as text, which the
    model then refuses with the field named)."""
    kinds = _json_types(schema, components)
    if "integer" in kinds and _INTEGER.match(value):
        return int(value)
    if "number" in kinds and _NUMBER.match(value):
        return float(value) if "." in value else int(value)
    if "boolean" in kinds and value in ("true", "false"):
        return value == "true"
    if "null" in kinds and value == "" and "string" not in kinds:
        return None
    return value


def query_object(request: Request, operation: Operation, schemas: dict[str, Any],
                 components: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key in request.query_params.keys():
        values = request.query_params.getlist(key)
        if len(values) > 1:
            raise validation(key, f"查询参数 {key} 重复", "duplicate")
        if key not in operation.query_fields:
            raise validation(key, f"{key}是不允许的字段", "extra_forbidden")
        data[key] = coerce_query(values[0], schemas.get(key, {}), components)
    return data


def validate(model: type[BaseModel], data: dict[str, Any]) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Problem(*validation_problem(model, exc.errors(include_url=False, include_input=False))) from None
