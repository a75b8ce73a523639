"""RPC boundary helpers: every input and output is a pydantic model.

``@contract(Request, Response)`` goes under ``@rpc``: it validates the single payload argument
(or keyword arguments) into ``Request``, turns pydantic errors into one ``SwmsError`` naming each
field in Chinese, and dumps the result as plain JSON (no kombu ``__type__`` tags on the wire).
"""
from __future__ import annotations

import functools
import logging
import typing
from typing import Any, Callable

import eventlet
from kombu.serialization import registry as serializers
from nameko.amqp.publish import Publisher
from nameko.constants import AMQP_SSL_CONFIG_KEY, AMQP_URI_CONFIG_KEY, LOGIN_METHOD_CONFIG_KEY
from nameko.exceptions import IncorrectSignature, MethodNotFound
from nameko.rpc import Responder, Rpc, get_rpc_exchange
from pydantic import BaseModel, ValidationError

from swms import errors, wire
from swms.ops import count_unreadable
from swms.queues import TypedRpcConsumer
from swms.validation import validation_problem

log = logging.getLogger(__name__)

def validation_failed(model: type[BaseModel], exc: ValidationError) -> errors.SwmsError:
    return errors.SwmsError(*validation_problem(model, exc.errors(include_url=False, include_input=False)))


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
                # "every method takes one JSON object": {} is that object, with nothing in it
                if (payload is not None and payload != {}) or fields:
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
#
# A request that never reaches a method is answered with a SwmsError too, so that clients in any
# language branch on one error shape: a body kombu cannot decode, a body that is not
# {"args": [...], "kwargs": {...}}, a wrong signature (VALIDATION_FAILED, field ""), an unknown
# method (METHOD_NOT_FOUND). Each is acked, counted (swms_unreadable_messages) and logged in one
# bounded line (swms.wire.excerpt), where nameko and kombu would drop it unanswered, log the whole
# body, or answer with their own exception types.

REPLY_RETRY_POLICY = {"max_retries": 20, "interval_start": 0.5, "interval_step": 1, "interval_max": 5}

UNDECODABLE = "无法读取请求：请求内容不是可解析的 JSON（须为 UTF-8 编码的 application/json，嵌套不可过深，整数不可过长）"
MALFORMED = '无法读取请求：请求应为 JSON 对象 {"args": [...], "kwargs": {...}}'
WRONG_SIGNATURE = "无法读取请求：每个接口只接受一个对象（JSON object），或仅使用命名参数"


def unreadable_request(message: str, reason: str) -> errors.SwmsError:
    return errors.SwmsError(errors.VALIDATION_FAILED, message, "",
                            [{"field": "", "code": errors.VALIDATION_FAILED, "message": message, "reason": reason}])


def _is_request(body: Any) -> bool:
    return (isinstance(body, dict) and isinstance(body.get("args"), list)
            and isinstance(body.get("kwargs"), dict))


class _PatientReplyPublisher(Publisher):
    retry_policy = REPLY_RETRY_POLICY


class _PatientResponder(Responder):
    publisher_cls = _PatientReplyPublisher


class _AnsweredAs:
    """The request as nameko's Responder reads it (it answers in the request's content type), with
    the service's own content type when the request's was none, unknown or refused: a request that
    could not be read is still answered in JSON, never in a format the service does not speak."""

    def __init__(self, message, content_type: str):
        self.properties = {**message.properties, "content_type": content_type}


class RpcQueueConsumer(wire.GuardedQueueConsumer):
    """The RPC queue's consumer (a connection of its own, like swms.deadletter's for events)."""


class PatientRpcConsumer(TypedRpcConsumer):   # rpc-<service> of the AMQP_QUEUE_TYPE (swms.queues)
    queue_consumer = RpcQueueConsumer()

    def handle_result(self, message, result, exc_info):
        config = self.container.config
        accepted = {serializers.name_to_type[name] for name in self.container.accept}
        request = message
        if message.properties.get("content_type") not in accepted:
            request = _AnsweredAs(message, serializers.name_to_type[self.container.serializer])
        if message.properties.get("reply_to"):   # without one the caller asked for no answer
            responder = _PatientResponder(
                config[AMQP_URI_CONFIG_KEY], get_rpc_exchange(config), self.container.serializer, request,
                ssl=config.get(AMQP_SSL_CONFIG_KEY), login_method=config.get(LOGIN_METHOD_CONFIG_KEY))
            try:
                result, exc_info = responder.send_response(result, exc_info)
            except Exception as exc:  # the broker stayed away: keep the service alive (see above)
                log.error("RPC reply to %s could not be sent (%s: %s); the caller will time out",
                          message.delivery_info.get("routing_key"), type(exc).__name__, exc)
        self.queue_consumer.ack_message(message)   # skipped by nameko when the channel is dead
        return result, exc_info

    # ---- requests that never reach a method ---------------------------------------------------

    def handle_undecodable(self, message, exc):
        """kombu could not decode the body (swms.wire.GuardedQueueConsumer calls this)."""
        self._refuse(message, "undecodable", wire.describe(exc), unreadable_request(UNDECODABLE, "body_undecodable"))

    def handle_message(self, body, message):
        if not _is_request(body):
            self._refuse(message, "malformed", f"decoded to {type(body).__name__}",
                         unreadable_request(MALFORMED, "body_malformed"))
            return
        super().handle_message(body, message)

    def get_provider_for_method(self, routing_key):
        try:
            return super().get_provider_for_method(routing_key)
        except MethodNotFound:
            count_unreadable(self.container, "rpc", "method_not_found")
            log.warning("RPC request for unknown method %s answered %s", wire.short(routing_key),
                        errors.METHOD_NOT_FOUND)
            raise errors.SwmsError(errors.METHOD_NOT_FOUND, f"没有这个接口：{routing_key}") from None

    def _refuse(self, message, reason: str, why: str, error: errors.SwmsError) -> None:
        count_unreadable(self.container, "rpc", reason)
        log.warning("unreadable RPC request to %s answered %s (%s; content type %s): %s",
                    wire.short(message.delivery_info.get("routing_key")), error.code, why,
                    wire.short(message.content_type), wire.excerpt(message.body))
        self.handle_result(message, None, (type(error), error, None))


class PatientRpc(Rpc):
    rpc_consumer = PatientRpcConsumer()

    def check_signature(self, args, kwargs):
        try:
            super().check_signature(args, kwargs)
        except IncorrectSignature as exc:
            count_unreadable(self.container, "rpc", "signature")
            log.warning("RPC request to %s.%s with a wrong signature answered %s (%s)", self.container.service_name,
                        self.method_name, errors.VALIDATION_FAILED, wire.short(exc))
            raise unreadable_request(WRONG_SIGNATURE, "signature") from None


rpc = PatientRpc.decorator
