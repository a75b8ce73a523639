"""A Nameko RPC client for asyncio (aio-pika), speaking the documented wire protocol
(docs/contracts.md "from any other language"): no nameko or eventlet import.

One connection and one exclusive, auto-delete reply queue per process, bound to the ``nameko-rpc``
exchange under its own name (Nameko's responders publish replies there with ``reply_to`` as the
routing key). Each call gets a fresh AMQP ``correlation_id`` and a future keyed by it.

- Publisher confirms and ``mandatory``: a call to a service with no queue (not running) is
  returned by the broker at once and answered 503 UPSTREAM_UNAVAILABLE, not after the timeout.
- Per-call timeout: 504 UPSTREAM_TIMEOUT. The request carries the same ``expiration``, so the
  broker drops it if no service took it by then (nobody waits for the answer any more).
- Connection lost: every call in flight fails at once with 503 (its reply would have gone to the
  queue that died with the connection); the client connects again, to the first broker of
  ``AMQP_URI`` that answers (one broker, or a cluster's nodes separated by ``;``: a node that is
  gone is passed over), with a reply queue of a new name (the broker may not have noticed yet that
  the old connection died, and would refuse its exclusive queue to the new one).
- Context data rides in ``nameko.<key>`` headers: ``auth_token``, ``client_ip``, and
  ``call_id_stack`` = [X-Request-ID], which services log as the correlation id (swms.logs).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import aio_pika
import aio_pika.exceptions

from services.gateway.problems import Problem, internal_error
from swms import error_codes as c
from swms.brokers import broker_urls

log = logging.getLogger(__name__)

RPC_EXCHANGE = "nameko-rpc"
HEADER_PREFIX = "nameko."
SWMS_ERROR_PATH = "swms.errors.SwmsError"
UNAVAILABLE_MESSAGE = "系统繁忙，请稍后重试"
TIMEOUT_MESSAGE = "系统响应超时，请稍后重试"


def amqp_url(uri: str) -> str:
    """The services' kombu URI (``pyamqp://``) as aio-pika wants it (``amqp://``)."""
    for prefix in ("pyamqp://", "librabbitmq://"):
        if uri.startswith(prefix):
            return "amqp://" + uri[len(prefix):]
    return uri


def encode_request(payload: dict[str, Any] | None, context: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """The body and headers of one RPC request: ``{"args": [payload], "kwargs": {}}`` (no args for
    methods that take none); context data as ``nameko.<key>`` headers, ``None`` values left out."""
    body = {"args": [] if payload is None else [payload], "kwargs": {}}
    headers = {HEADER_PREFIX + key: value for key, value in context.items() if value is not None}
    return json.dumps(body, ensure_ascii=False).encode("utf-8"), headers


def upstream_unavailable() -> Problem:
    return Problem(c.UPSTREAM_UNAVAILABLE, UNAVAILABLE_MESSAGE)


def decode_reply(body: bytes) -> Any:
    """The result of a reply, or the ``Problem`` its error stands for.

    A ``SwmsError`` carries ``exc_args = [code, message, field, details]``; Nameko sends "" or
    "None" for no field. Any other exception type (MethodNotFound, IncorrectSignature, a bug) is
    logged and answered as a generic 500: its name and text stay here."""
    try:
        reply = json.loads(body)
    except ValueError:
        log.error("RPC reply is not JSON (%d bytes)", len(body))
        raise internal_error() from None
    if not isinstance(reply, dict):
        log.error("RPC reply is not an object")
        raise internal_error()
    error = reply.get("error")
    if error is None:
        return reply.get("result")
    args = error.get("exc_args") if isinstance(error, dict) else None
    if (isinstance(error, dict) and (error.get("exc_path") == SWMS_ERROR_PATH or error.get("exc_type") == "SwmsError")
            and isinstance(args, list) and len(args) >= 2 and all(isinstance(a, str) for a in args[:2])):
        field = args[2] if len(args) > 2 and isinstance(args[2], str) and args[2] not in ("", "None") else None
        details = args[3] if len(args) > 3 and isinstance(args[3], list) else []
        problem = Problem(args[0], args[1], field, [d for d in details if isinstance(d, dict)])
        if problem.code == c.INTERNAL_ERROR and args[0] != c.INTERNAL_ERROR:
            log.error("RPC answered an error code this gateway does not know: %s", args[0])
        raise problem
    log.error("RPC answered a %s: %s", error.get("exc_type") if isinstance(error, dict) else type(error).__name__,
              str(error.get("value") if isinstance(error, dict) else error)[:500])
    raise internal_error()


class RpcClient:
    def __init__(self, amqp_uri: str, timeout: float = 10.0,
                 observe: Callable[[str, str, float], None] | None = None,
                 reconnect_interval: float = 2.0):
        self.urls = [amqp_url(url) for url in broker_urls(amqp_uri)]
        self.timeout = timeout
        self.observe = observe or (lambda rpc, outcome, seconds: None)
        self.reconnect_interval = reconnect_interval
        self.reply_queue_name = ""   # one per connection (_connect)
        self._pending: dict[str, asyncio.Future] = {}
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        self._consuming = False
        self._starter: asyncio.Task | None = None
        self._closing = False

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connects in the background: the HTTP server comes up (and says not ready) while the
        broker is away, and becomes ready when it answers."""
        self._starter = asyncio.create_task(self._connect_until_done())

    async def _connect_until_done(self) -> None:
        while not self._closing:
            try:
                await self._connect()
                return
            except Exception as exc:   # broker away or refusing: try again
                log.warning("AMQP connection failed (%s); retrying in %.0f s", type(exc).__name__,
                            self.reconnect_interval)
                await asyncio.sleep(self.reconnect_interval)

    async def _open(self) -> aio_pika.abc.AbstractConnection:
        """A connection to the first broker that answers."""
        failure: Exception = RuntimeError("AMQP_URI names no broker")
        for url in self.urls:
            try:
                return await aio_pika.connect(url, client_properties={"connection_name": "swms-gateway"})
            except Exception as exc:   # that node is away: the next one
                failure = exc
        raise failure

    async def _connect(self) -> None:
        connection = await self._open()
        reply_queue_name = f"rpc.reply-gateway-{uuid.uuid4().hex}"
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            exchange = await channel.declare_exchange(RPC_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
            queue = await channel.declare_queue(reply_queue_name, exclusive=True, auto_delete=True)
            await queue.bind(exchange, routing_key=reply_queue_name)
            await queue.consume(self._on_reply, no_ack=True)
        except BaseException:
            await connection.close()
            raise
        connection.close_callbacks.add(self._on_connection_lost)
        self._connection, self._exchange, self.reply_queue_name = connection, exchange, reply_queue_name
        self._consuming = True
        log.info("AMQP connected; replies on %s", self.reply_queue_name)

    def _on_connection_lost(self, _connection: Any, exc: BaseException | None = None) -> None:
        self._consuming = False
        self._fail_pending()
        if not self._closing:
            log.warning("AMQP connection lost (%s); reconnecting", type(exc).__name__ if exc else "closed")
            self._starter = asyncio.get_running_loop().create_task(self._connect_until_done())

    def _fail_pending(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(upstream_unavailable())
        self._pending.clear()

    async def close(self) -> None:
        self._closing = True
        if self._starter is not None:
            self._starter.cancel()
        self._fail_pending()
        if self._connection is not None:
            await self._connection.close()
        self._consuming = False

    @property
    def ready(self) -> bool:
        """The connection is open and the reply queue is consumed (/readyz)."""
        return bool(self._connection is not None and not self._connection.is_closed and self._consuming)

    # -- calls --------------------------------------------------------------------------------

    async def _on_reply(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        future = self._pending.pop(message.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(message.body)

    async def call(self, rpc: str, payload: dict[str, Any] | None, context: dict[str, Any],
                   timeout: float | None = None) -> Any:
        """``rpc`` is ``service.method``. Returns the result or raises ``Problem``."""
        timeout = self.timeout if timeout is None else timeout
        started = time.perf_counter()
        outcome = "reply"   # any answer, a refusal included; else "timeout" or "unavailable"
        try:
            body = await self._round_trip(rpc, payload, context, timeout)
        except Problem as problem:
            outcome = "timeout" if problem.code == c.UPSTREAM_TIMEOUT else "unavailable"
            raise
        finally:
            self.observe(rpc, outcome, time.perf_counter() - started)
        return decode_reply(body)

    async def _round_trip(self, rpc: str, payload: dict[str, Any] | None, context: dict[str, Any],
                          timeout: float) -> bytes:
        if not self.ready or self._exchange is None:
            raise upstream_unavailable()
        body, headers = encode_request(payload, context)
        correlation_id = uuid.uuid4().hex
        future = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        message = aio_pika.Message(body, content_type="application/json", content_encoding="utf-8",
                                   headers=headers, correlation_id=correlation_id,
                                   reply_to=self.reply_queue_name, expiration=timeout,
                                   delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT)
        try:
            async with asyncio.timeout(timeout):
                try:
                    await self._exchange.publish(message, routing_key=rpc, mandatory=True)
                except (aio_pika.exceptions.PublishError, aio_pika.exceptions.DeliveryError):
                    log.warning("RPC %s not routed (service not running?)", rpc)
                    raise upstream_unavailable() from None
                except (aio_pika.exceptions.AMQPError, ConnectionError, OSError, RuntimeError) as exc:
                    log.warning("RPC %s could not be published (%s)", rpc, type(exc).__name__)
                    raise upstream_unavailable() from None
                return await future
        except TimeoutError:
            log.warning("RPC %s: no reply within %.1f s", rpc, timeout)
            raise Problem(c.UPSTREAM_TIMEOUT, TIMEOUT_MESSAGE) from None
        finally:
            self._pending.pop(correlation_id, None)
