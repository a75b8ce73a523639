"""Chinese messages for pydantic validation errors, shared by the RPC boundary (swms.rpc) and the
HTTP gateway, so a bad field gets the same code and words whichever way it came in.

No Nameko or eventlet import here: the gateway runs on asyncio.
"""
from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel

from swms import text
from swms.error_codes import TEXT_CHARACTERS_NOT_ALLOWED, VALIDATION_FAILED

_MESSAGES = {
    "missing": "为必填项",
    "string_too_short": "长度不足",
    "string_too_long": "长度超出限制",
    "string_type": "应为文本",
    "int_type": "应为整数",
    "int_parsing": "应为整数",
    "bool_type": "应为是或否",
    "bool_parsing": "应为是或否",
    "enum": "不在可选范围内",
    "literal_error": "不在可选范围内",
    "extra_forbidden": "是不允许的字段",
    "value_error": "格式不正确",
    "string_pattern_mismatch": "格式不正确",
    "date_type": "应为日期（YYYY-MM-DD）",
    "date_from_datetime_parsing": "应为日期（YYYY-MM-DD）",
    "date_parsing": "应为日期（YYYY-MM-DD）",
    "greater_than_equal": "数值过小",
    "less_than_equal": "数值过大",
    "model_type": "应为对象",
    "dict_type": "应为对象",
    "list_type": "应为列表",
    "uuid_parsing": "编号格式不正确",
    "uuid_type": "编号格式不正确",
}


def _field_info(model: type[BaseModel], loc: tuple):
    return model.model_fields.get(str(loc[0])) if loc else None


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model inside ``Model``, ``Model | None``, ``list[Model]``, or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def _label(model: type[BaseModel], loc: tuple) -> str:
    """The field's title; inside lists and nested models, the titles along the way
    (``线下学时第1项课程名称``); the field's name where it has no title."""
    parts: list[str] = []
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int):
            parts.append(f"第{part + 1}项")
            continue
        field = current.model_fields.get(str(part)) if current is not None else None
        parts.append(field.title if field is not None and field.title else str(part))
        current = _nested_model(field.annotation) if field is not None else None
    return "".join(parts) or "请求"


def _code(model: type[BaseModel], loc: tuple) -> str:
    """A field may name its own stable code (e.g. ID_NUMBER_INVALID) for any failure."""
    field = _field_info(model, loc)
    extra = field.json_schema_extra if field is not None and isinstance(field.json_schema_extra, dict) else {}
    return extra.get("error_code", VALIDATION_FAILED)


def validation_problem(model: type[BaseModel], errors: list[dict]) -> tuple[str, str, str, list[dict]]:
    """pydantic's errors for ``model`` as ``(code, message, field, details)``: the first bad field's
    code and Chinese message, and one ``{field, code, message, reason}`` per bad field."""
    details = []
    for item in errors:
        loc = tuple(item.get("loc", ()))
        field = ".".join(str(part) for part in loc) or "payload"
        ctx = item.get("ctx") or {}
        ctx_message = ctx.get("error")
        if item["type"] == text.ERROR_TYPE:
            # One code for the text policy wherever the field is (swms/text.py), with where the
            # refused character stands so that a form can point at it.
            details.append({"field": field, "code": TEXT_CHARACTERS_NOT_ALLOWED,
                            "message": f"{_label(model, loc)}{item['msg']}", "reason": item["type"],
                            "position": ctx.get("position"), "code_point": ctx.get("code_point")})
            continue
        if item["type"] == "value_error" and ctx_message is not None and str(ctx_message):
            message = f"{_label(model, loc)}：{ctx_message}"
        else:
            message = f"{_label(model, loc)}{_MESSAGES.get(item['type'], '格式不正确')}"
        details.append({"field": field, "code": _code(model, loc), "message": message,
                        "reason": item["type"]})
    if not details:
        return VALIDATION_FAILED, "请求格式不正确", "payload", []
    first = details[0]
    return first["code"], first["message"], first["field"], details
