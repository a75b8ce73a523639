"""Event handlers that retry with backoff and dead-letter what cannot succeed.

Nameko's own choices are both wrong for events that must not be lost: ``requeue_on_error=False``
acks (drops) the event when the handler fails, ``True`` requeues it at once, forever (a poison
message loops and blocks the queue). This handler instead:

- on success, acks;
- on a failure that retrying cannot fix (the payload does not match the contract, or is not JSON
  at all) or after ``EVENT_MAX_ATTEMPTS`` attempts (default 5), publishes the message with its reason
  to the durable queue ``swms.dead-letter`` (exchange ``swms.dead-letter``), then acks;
- on any other failure, parks the message in ``<queue>.retry`` with a per-message TTL (1, 4, 16,
  64 s … times ``EVENT_RETRY_BASE_SECONDS``); RabbitMQ dead-letters it back to the handler's queue when the TTL ends, then acks.

Headers on dead letters: ``x-swms-reason``, ``x-swms-queue``, ``x-swms-attempts``, plus the original
headers and body, so an operator can inspect, fix and re-publish.

``DeadLetteringEventHandler`` (``guarded_event_handler``) keeps Nameko's own choice for failures
(``requeue_on_error``) for handlers that manage their retries themselves, and only dead-letters a
body that cannot be decoded. Both log such a body in one bounded line (swms.wire) and count it
(``swms_unreadable_messages``, kind ``event``).

The handler's queue, its ``.retry`` queue and ``swms.dead-letter`` are of the type ``AMQP_QUEUE_TYPE``
names (swms.queues); with quorum queues the broker also dead-letters, to the same queue, a message
that was never acked after ``DELIVERY_LIMIT`` more deliveries (a handler that requeues on every
failure, a process that dies on it).
"""
from __future__ import annotations

import logging

from kombu import Exchange, Queue
from nameko.amqp.publish import Publisher
from nameko.constants import AMQP_URI_CONFIG_KEY
from pydantic import ValidationError

from swms import wire
from swms.ops import count_unreadable
from swms.queues import DEAD_LETTER_QUEUE  # noqa: F401  (the classic declaration; tests read it from here)
from swms.queues import DEAD_LETTER_EXCHANGE, TypedEventHandler, durable_queue
from swms.queues import dead_letter_queue as typed_dead_letter_queue

log = logging.getLogger(__name__)

ATTEMPTS_HEADER = "x-swms-attempts"


def backoff_seconds(attempt: int, base: float = 1.0) -> float:
    return base * 4 ** (attempt - 1)  # 1, 4, 16, 64 … × base


def retry_queue(queue_name: str, config: dict) -> Queue:
    """``<queue>.retry``: holds each message for its own backoff (per-message TTL), then the broker
    dead-letters it back to ``queue_name``."""
    return durable_queue(Queue(f"{queue_name}.retry", durable=True, queue_arguments={
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue_name}), config, dead_letter=False)


class DeadLetteringQueueConsumer(wire.GuardedQueueConsumer):
    """The event queues' consumer (a connection of its own): a body that cannot even be decoded
    goes to the handler's ``handle_undecodable``, which dead-letters it."""


class DeadLetteringEventHandler(TypedEventHandler):
    """Nameko's event handler (``requeue_on_error`` as Nameko has it), on the guarded consumer, its
    queue of the ``AMQP_QUEUE_TYPE`` (quorum: a delivery limit ends a requeue loop)."""

    queue_consumer = DeadLetteringQueueConsumer()

    def setup(self):
        super().setup()
        config = self.container.config
        self.publisher = Publisher(config[AMQP_URI_CONFIG_KEY], use_confirms=True, delivery_mode=2)
        self.dead_letter_queue = typed_dead_letter_queue(config)

    def handle_undecodable(self, message, exc):
        count_unreadable(self.container, "event", "undecodable")
        self.dead_letter(message, f"malformed message: {wire.describe(exc)}", attempts=1,
                         excerpt=wire.excerpt(message.body))
        self.queue_consumer.ack_message(message)

    def _republish(self, message, **kwargs) -> None:
        self.publisher.publish(message.body, content_type=message.content_type or "application/octet-stream",
                               content_encoding=message.content_encoding or "binary", **kwargs)

    def dead_letter(self, message, reason: str, attempts: int, excerpt: str | None = None) -> None:
        log.error("event from %s dead-lettered after %d attempt(s): %s%s", self.queue.name, attempts, reason[:500],
                  f"; body: {excerpt}" if excerpt is not None else "")
        self._republish(message, exchange=DEAD_LETTER_EXCHANGE, routing_key=self.queue.name,
                        declare=[DEAD_LETTER_EXCHANGE, self.dead_letter_queue],
                        headers={**(message.headers or {}), ATTEMPTS_HEADER: attempts, "x-swms-reason": reason[:2000],
                                 "x-swms-queue": self.queue.name})


class RetryingEventHandler(DeadLetteringEventHandler):
    """Retries with backoff and dead-letters what cannot succeed (see the module's docstring)."""

    def setup(self):
        super().setup()
        config = self.container.config
        self.max_attempts = int(config.get("EVENT_MAX_ATTEMPTS", 5))
        self.retry_base = float(config.get("EVENT_RETRY_BASE_SECONDS", 1.0))
        self.retry_queue = retry_queue(self.queue.name, config)

    def handle_message_processed(self, message, result=None, exc_info=None):
        if exc_info is not None:
            attempts = int((message.headers or {}).get(ATTEMPTS_HEADER, 0)) + 1
            error = exc_info[1]
            reason = f"{type(error).__name__}: {error}"
            if isinstance(error, ValidationError):
                self.dead_letter(message, f"payload does not match the contract: {reason}", attempts)
            elif attempts >= self.max_attempts:
                self.dead_letter(message, f"failed {attempts} times, last: {reason}", attempts)
            else:
                self.retry_later(message, attempts, reason)
        self.queue_consumer.ack_message(message)

    def retry_later(self, message, attempts: int, reason: str) -> None:
        delay = backoff_seconds(attempts, self.retry_base)
        log.warning("event from %s failed (attempt %d), retrying in %.0f s: %s",
                    self.queue.name, attempts, delay, reason[:500])
        self._republish(message, exchange=Exchange(""), routing_key=self.retry_queue.name,
                        declare=[self.retry_queue], expiration=delay,
                        headers={**(message.headers or {}), ATTEMPTS_HEADER: attempts, "x-swms-last-error": reason[:500]})


event_handler = RetryingEventHandler.decorator
guarded_event_handler = DeadLetteringEventHandler.decorator
