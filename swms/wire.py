"""Messages that cannot be read, caught where kombu decodes them.

kombu decodes a message body in the consumer's own thread, before any entrypoint sees it. A body it
cannot decode (JSON nested deeper than Python's recursion limit, an integer literal over 4,300
digits, bytes that are not UTF-8, a content type the service does not accept) goes to the
consumer's ``on_decode_error``; kombu's default logs the WHOLE body in one line (600 KB for an
object nested 100,000 deep) and drops the message, so an RPC caller waits out its own timeout.

``GuardedQueueConsumer`` hands such a message to its provider's ``handle_undecodable(message, exc)``
in a thread of its own (the consumer keeps consuming): swms.rpc answers VALIDATION_FAILED,
swms.deadletter dead-letters. Log lines quote the body through ``excerpt`` only: a few hundred
characters at most, resident ID numbers masked.
"""
from __future__ import annotations

import logging
from functools import partial

from kombu.exceptions import DecodeError

from swms.logs import mask_id_numbers
from swms.queues import QueueConsumer   # declares swms.dead-letter when needed; broker lists logged masked

log = logging.getLogger(__name__)

EXCERPT_CHARS = 160
_ID_CHARS = 18   # read this much past the cut, so that an ID number the cut splits is masked whole


def excerpt(body) -> str:
    """At most ``EXCERPT_CHARS`` characters of a raw body for a log line: bytes that are not UTF-8
    and control characters escaped, ID numbers masked, "…(N bytes)" when cut."""
    if isinstance(body, str):
        size, text = len(body.encode("utf-8", "surrogatepass")), body[:EXCERPT_CHARS + _ID_CHARS]
    else:
        raw = bytes(body or b"")
        # 4 bytes per character at most: enough bytes for EXCERPT_CHARS + _ID_CHARS characters
        size = len(raw)
        text = raw[:4 * (EXCERPT_CHARS + _ID_CHARS)].decode("utf-8", "backslashreplace")[:EXCERPT_CHARS + _ID_CHARS]
    shown = mask_id_numbers(text)[:EXCERPT_CHARS]
    shown = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in shown)
    return shown if len(text) <= EXCERPT_CHARS else f"{shown}…({size} bytes)"


def describe(exc: BaseException) -> str:
    """The decoder's complaint (kombu wraps it in DecodeError), bounded and masked."""
    inner = exc.__context__ if isinstance(exc, DecodeError) and exc.__context__ is not None else exc
    return mask_id_numbers(f"{type(inner).__name__}: {inner}")[:200]


def short(value) -> str:
    """A header or routing key chosen by the sender, bounded for a log line."""
    return mask_id_numbers(str(value))[:100]


class GuardedQueueConsumer(QueueConsumer):
    """Nameko's queue consumer, but a body that cannot be decoded goes to the provider's
    ``handle_undecodable(message, exc)``, which must ack (or dead-letter and ack) it."""

    def get_consumers(self, consumer_cls, channel):
        consumers = super().get_consumers(consumer_cls, channel)
        for provider, consumer in self._consumers.items():
            if hasattr(provider, "handle_undecodable"):
                consumer.on_decode_error = partial(self._on_undecodable, provider)
        return consumers

    def _on_undecodable(self, provider, message, exc):
        self.container.spawn_managed_thread(partial(provider.handle_undecodable, message, exc),
                                            identifier=f"{type(provider).__name__}.handle_undecodable")

    def on_decode_error(self, message, exc):
        """Providers without a handler of their own: kombu's default, with a bounded log line."""
        log.error("undecodable message on %s dropped (%s; content type %s): %s",
                  short(message.delivery_info.get("routing_key")), describe(exc), short(message.content_type),
                  excerpt(message.body))
        self.ack_message(message)
