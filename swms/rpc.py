"""RPC boundary helpers: every input and output is a pydantic model.

``@contract(Request, Response)`` goes under ``@rpc``: it validates the single payload argument
(or keyword arguments) into ``Request``, turns pydantic errors into one ``SwmsError`` naming each
field in Chinese, and dumps the result as plain JSON (no kombu ``__type__`` tags on the wire).
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Callable

import eventlet
from nameko.amqp.publish import Publisher
from nameko.constants import (AMQP_SSL_CONFIG_KEY, AMQP_URI_CONFIG_KEY, DEFAULT_SERIALIZER,
                              LOGIN_METHOD_CONFIG_KEY, SERIALIZER_CONFIG_KEY)
from nameko.rpc import Responder, Rpc, get_rpc_exchange
from pydantic import BaseModel, ValidationError

from swms import errors
from swms.queues import TypedRpcConsumer

log = logging.getLogger(__name__)

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
    return extra.get("error_code", errors.VALIDATION_FAILED)


def validation_failed(model: type[BaseModel], exc: ValidationError) -> errors.SwmsError:
    details = []
    for item in exc.errors(include_url=False, include_input=False):
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
        return errors.SwmsError(errors.VALIDATION_FAILED, "请求格式不正确", "payload")
    first = details[0]
    return errors.SwmsError(first["code"], first["message"], first["field"], details)


def parse(model: type[BaseModel], data: Any) -> BaseModel:
    if isinstance(data, model):
        return data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise errors.SwmsError(errors.VALIDATION_FAILED, "请求应为对象（JSON object）", "payload")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_failed(model, exc) from None


def dump(result: Any) -> Any:
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    if isinstance(result, list):
        return [dump(item) for item in result]
    return result


def contract(request: type[BaseModel] | None, response: type[BaseModel] | None = None) -> Callable:
    def decorate(method: Callable) -> Callable:
        @functools.wraps(method)
        def entrypoint(self, payload: Any = None, **fields: Any):
            if request is None:
                if payload is not None or fields:
                    raise errors.SwmsError(errors.VALIDATION_FAILED, "此接口不接受参数", "payload")
                result = method(self)
            else:
                if payload is not None and fields:
                    raise errors.SwmsError(errors.VALIDATION_FAILED,
                                           "请求应为一个对象，或仅使用命名参数", "payload")
                result = method(self, parse(request, payload if payload is not None else fields))
            if response is not None and not isinstance(result, response):
                result = response.model_validate(result)
            return dump(result)

        # nameko checks call signatures against this wrapper, not the wrapped method.
        del entrypoint.__wrapped__
        entrypoint.request_model = request
        entrypoint.response_model = response
        return entrypoint

    return decorate


def call(method_proxy, payload: Any, timeout: float = 10.0) -> Any:
    """Call another service with a bound wait (nameko's in-service RpcProxy waits forever).

    Never wrap database work in this: eventlet.Timeout can leak pooled connections.
    """
    reply = method_proxy.call_async(dump(payload))
    try:
        with eventlet.Timeout(timeout):
            return reply.result()
    except eventlet.Timeout:
        raise errors.SwmsError(errors.UPSTREAM_UNAVAILABLE, "系统繁忙，请稍后重试") from None


# --- The RPC entrypoint every service uses -----------------------------------------------------
#
# nameko 2.14's RpcConsumer sends the reply with 3 quick retries and lets a failure escape from the
# worker, which kills the whole container: a service caught mid-reply by a RabbitMQ restart exits
# instead of reconnecting. Ours retries the reply for about a minute and, if the broker is still
# away, gives the reply up (the caller times out; its reply queue may be gone anyway) and keeps
# the service running. The request is acked either way when its channel still lives (the work is
# done; a requeue would only repeat it); if the channel died with the broker, the broker
# redelivers it, which is why RPC handlers that change state are idempotent or refuse a repeat
# with a clear error.

REPLY_RETRY_POLICY = {"max_retries": 20, "interval_start": 0.5, "interval_step": 1, "interval_max": 5}


class _PatientReplyPublisher(Publisher):
    retry_policy = REPLY_RETRY_POLICY


class _PatientResponder(Responder):
    publisher_cls = _PatientReplyPublisher


class PatientRpcConsumer(TypedRpcConsumer):   # rpc-<service> of the AMQP_QUEUE_TYPE (swms.queues)
    def handle_result(self, message, result, exc_info):
        config = self.container.config
        responder = _PatientResponder(
            config[AMQP_URI_CONFIG_KEY], get_rpc_exchange(config),
            config.get(SERIALIZER_CONFIG_KEY, DEFAULT_SERIALIZER), message,
            ssl=config.get(AMQP_SSL_CONFIG_KEY), login_method=config.get(LOGIN_METHOD_CONFIG_KEY))
        try:
            result, exc_info = responder.send_response(result, exc_info)
        except Exception as exc:  # the broker stayed away: keep the service alive (see above)
            log.error("RPC reply to %s could not be sent (%s: %s); the caller will time out",
                      message.delivery_info.get("routing_key"), type(exc).__name__, exc)
        self.queue_consumer.ack_message(message)   # skipped by nameko when the channel is dead
        return result, exc_info


class PatientRpc(Rpc):
    rpc_consumer = PatientRpcConsumer()


rpc = PatientRpc.decorator
