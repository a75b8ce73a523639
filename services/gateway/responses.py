"""Answers on their way out: times as RFC 3339 with their zone, as the contract says.

The services keep times in UTC; on SQLite they come back without a zone (``2026-12-03T12:34:56.1``),
which is not an OpenAPI ``date-time``. Every value the response schema declares ``date-time`` and
that carries no zone gets ``Z``; nothing else is touched (the walk follows the schema, so text that
merely looks like a time stays as it is).
"""
from __future__ import annotations

import re
from typing import Any

_NAIVE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?$")


def with_zones(value: Any, schema: dict[str, Any], components: dict[str, Any], depth: int = 0) -> Any:
    if depth > 40 or not isinstance(schema, dict):
        return value
    if "$ref" in schema:
        schema = components.get(schema["$ref"].rsplit("/", 1)[-1], {})
    if isinstance(value, str):
        if schema.get("format") == "date-time" and _NAIVE.match(value):
            return value + "Z"
        for option in schema.get("anyOf", []) + schema.get("oneOf", []):
            resolved = with_zones(value, option, components, depth + 1)
            if resolved is not value:
                return resolved
        return value
    if isinstance(value, dict):
        options = [schema] + schema.get("anyOf", []) + schema.get("oneOf", []) + schema.get("allOf", [])
        for option in options:
            if "$ref" in option:
                option = components.get(option["$ref"].rsplit("/", 1)[-1], {})
            properties = option.get("properties")
            extra = option.get("additionalProperties")
            if properties or isinstance(extra, dict):
                return {key: with_zones(item, (properties or {}).get(key, extra if isinstance(extra, dict) else {}),
                                        components, depth + 1) for key, item in value.items()}
        return value
    if isinstance(value, list):
        for option in [schema] + schema.get("anyOf", []) + schema.get("oneOf", []):
            if "$ref" in option:
                option = components.get(option["$ref"].rsplit("/", 1)[-1], {})
            if isinstance(option.get("items"), dict):
                return [with_zones(item, option["items"], components, depth + 1) for item in value]
        return value
    return value
