"""Chinese messages for pydantic validation errors, shared by the RPC boundary (swms.rpc) and the
HTTP gateway, so a bad field gets the same code and words whichever way it came in.

No Nameko or eventlet import here: the gateway runs on asyncio.
"""
from __future__ import annotations

from pydantic import BaseModel

from swms.error_codes import VALIDATION_FAILED

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


def _label(model: type[BaseModel], loc: tuple) -> str:
    field = _field_info(model, loc)
    return (field.title if field is not None and field.title else ".".join(map(str, loc))) or "请求"


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
        ctx_message = (item.get("ctx") or {}).get("error")
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
