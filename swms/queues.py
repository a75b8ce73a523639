"""The queues the services declare, of the type ``AMQP_QUEUE_TYPE`` names, and the broker list.

``classic`` (the default of config.yaml: one development broker): each durable queue lives on one
node. On a cluster, while that node is down its queues cannot be used (declaring or consuming one
through another node fails with ``NOT_FOUND - home node … is down``) and messages published for it
are unroutable.

``quorum`` (the default in deploy/): every durable queue is a RabbitMQ quorum queue, replicated
with Raft on the cluster's nodes (three in deploy/); it stays available while a majority of them
runs. Each gets a delivery limit (``DELIVERY_LIMIT``): a message delivered that many times more
without an ack (a handler that keeps failing and requeues, a process that crashes on it) goes to
the dead-letter exchange ``swms.dead-letter``, the same place swms.deadletter sends what it gives
up on, so no poison message loops forever. The broker's dead letters carry ``x-first-death-queue``
and ``x-first-death-reason: delivery_limit``. Dead-lettering is at-least-once (the broker keeps a
message until the dead-letter queue has confirmed it).

What changes with the type: the RPC queue ``rpc-<service>``, every event-handler queue
(``evt-…``), their ``.retry`` queues and ``swms.dead-letter``. Not the RPC reply queues: they are
transient (see ``TransientReplyListener``). Everything that declares one queue must declare it
with the same arguments, so all processes of a system run with one ``AMQP_QUEUE_TYPE``; a queue's
type cannot change in place (``python -m tools.migrate_queues``, docs/operations.md).

``AMQP_URI`` may name several brokers separated by ``;`` (kombu's failover list): a process
connects to the first that answers and, when its connection drops, moves to the next.
"""
from __future__ import annotations

import logging
import uuid

from amqp.exceptions import ConnectionError as AMQPConnectionError
from amqp.exceptions import RecoverableConnectionError
from kombu import Exchange, Queue
from kombu.exceptions import OperationalError
from nameko import messaging
from nameko.events import BROADCAST, EventHandler
from nameko.rpc import RPC_REPLY_QUEUE_TEMPLATE, RPC_REPLY_QUEUE_TTL, ReplyListener, RpcConsumer, get_rpc_exchange
from nameko.rpc import RpcProxy as NamekoRpcProxy
from nameko.standalone.rpc import ClusterRpcProxy as NamekoClusterRpcProxy
from nameko.standalone.rpc import PollingQueueConsumer, SingleThreadedReplyListener

from swms.brokers import broker_urls, redact  # noqa: F401  (broker_urls: read from here too)

log = logging.getLogger(__name__)

# What acking or requeueing on a connection that just died raises.
SETTLE_ERRORS = (OSError, AMQPConnectionError, RecoverableConnectionError, OperationalError)

QUEUE_TYPE_KEY = "AMQP_QUEUE_TYPE"
QUEUE_TYPES = ("classic", "quorum")
# Deliveries after the first before the broker dead-letters a message. Part of each quorum queue's
# declaration, so changing it means new queues (or a RabbitMQ policy ``delivery-limit``).
DELIVERY_LIMIT = 20

DEAD_LETTER_EXCHANGE = Exchange("swms.dead-letter", type="fanout", durable=True)
DEAD_LETTER_QUEUE = Queue("swms.dead-letter", exchange=DEAD_LETTER_EXCHANGE, durable=True)


def queue_type(config: dict) -> str:
    value = str(config.get(QUEUE_TYPE_KEY) or "classic").strip().lower()
    if value not in QUEUE_TYPES:
        raise ValueError(f"{QUEUE_TYPE_KEY}={value!r}: use one of {', '.join(QUEUE_TYPES)} (docs/configuration.md)")
    return value


def durable_queue(queue: Queue, config: dict, dead_letter: bool = True) -> Queue:
    """``queue`` as the configured type declares it: unchanged for classic; for quorum the same
    name and binding with quorum arguments and, with ``dead_letter``, the delivery limit and
    ``swms.dead-letter``. Arguments the queue already has (a ``.retry`` queue's own dead-letter
    route) are kept."""
    if queue_type(config) == "classic":
        return queue
    if queue.exclusive or queue.auto_delete or not queue.durable:
        raise ValueError(f"queue {queue.name}: a quorum queue cannot be exclusive, auto-delete or transient")
    arguments = dict(queue.queue_arguments or {}, **{"x-queue-type": "quorum"})
    if dead_letter:
        arguments.update({"x-delivery-limit": DELIVERY_LIMIT, "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE.name})
    if "x-dead-letter-exchange" in arguments:
        # at-least-once dead-lettering (the default drops a dead letter the target did not take);
        # the broker requires reject-publish overflow for it (no length limit is set, so it never rejects)
        arguments.update({"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"})
    return Queue(queue.name, exchange=queue.exchange, routing_key=queue.routing_key, durable=True,
                 auto_delete=False, exclusive=False, queue_arguments=arguments)


def dead_letter_queue(config: dict) -> Queue:
    return durable_queue(DEAD_LETTER_QUEUE, config, dead_letter=False)


class QueueConsumer(messaging.QueueConsumer):
    """Nameko's consumer of a process's queues, which (re)declares them on every connection; here
    it also declares ``swms.dead-letter`` first when a queue dead-letters to it, and logs a
    broker list without its passwords."""

    def get_consumers(self, consumer_cls, channel):
        for provider in self._providers:   # called on every (re)connection
            if isinstance(provider, _TransientReplyQueue):
                provider.renew_queue()
        if any((getattr(p, "queue", None) is not None and (p.queue.queue_arguments or {}).get(
                "x-dead-letter-exchange") == DEAD_LETTER_EXCHANGE.name) for p in self._providers):
            dead_letter_queue(self.container.config)(channel).declare()
        return super().get_consumers(consumer_cls, channel)

    def on_connection_error(self, exc, interval):
        log.warning("Error connecting to broker at %s (%s).\nRetrying in %s seconds.",
                    redact(self.amqp_uri), exc, interval)

    # nameko skips an ack or requeue when the message's channel is already gone, and ignores the
    # broker closing it meanwhile, but a socket reset half-way (a broker restart while a handler
    # finishes) escapes as OSError and kills the whole container. The broker redelivers whatever
    # was not acked on a dead connection (handlers are idempotent), so there is nothing to do
    # but go on.
    def ack_message(self, message):
        self._settle(super().ack_message, message, "ack")

    def requeue_message(self, message):
        self._settle(super().requeue_message, message, "requeue")

    @staticmethod
    def _settle(settle, message, what: str) -> None:
        try:
            settle(message)
        except SETTLE_ERRORS as exc:
            log.warning("could not %s a message from %s, its connection dropped (%s: %s); the broker "
                        "delivers it again", what, (message.delivery_info or {}).get("routing_key"),
                        type(exc).__name__, exc)


class TypedRpcConsumer(RpcConsumer):
    """``rpc-<service>`` of the configured type."""
    queue_consumer = QueueConsumer()

    def setup(self):
        if self.queue is None:
            super().setup()   # builds the queue and registers it; the consumer reads it when it starts
            self.queue = durable_queue(self.queue, self.container.config)


class TypedEventHandler(EventHandler):
    """An event handler whose durable queue is of the configured type (swms.deadletter's handlers
    build on it). Handlers without reliable delivery and broadcast handlers keep nameko's
    auto-delete or exclusive queue (classic: a quorum queue can be neither); none of SWMS's is one."""
    queue_consumer = QueueConsumer()

    def setup(self):
        super().setup()
        if self.reliable_delivery and self.handler_type is not BROADCAST:
            self.queue = durable_queue(self.queue, self.container.config)


class _TransientReplyQueue:
    """The RPC reply queue as nameko builds it, but transient (nameko: durable) and with a new name
    on every connection (nameko: one name for the life of the process).

    A reply queue belongs to one process (a uuid in its name) and lives on the node the process was
    connected to when it declared it. When that node is lost, the cluster forgets the queue only
    after a while: a process that fails over at once and declares the same name again can get
    ``NOT_FOUND - … process is stopped by supervisor`` or ``no queue`` (declare, bind or consume),
    or worse, a declaration that succeeds against the dying record and a consumer that never
    receives anything, so every call it makes times out (seen in tests/faults/test_cluster.py).
    A name never used before cannot meet such a record: the queue is created on the node the
    process is connected to now. Durable, a lost node's queue would be a name nobody can use until
    the node returns.

    Replies in flight on the old queue are lost either way: the caller's wait times out and it
    retries (services' handlers are idempotent, docs/contracts.md). An old queue left on a live node
    expires unused after ``RPC_REPLY_QUEUE_TTL``. Not exclusive: after a connection drop the broker
    may still hold the old connection for a while. The gateway's asyncio client does the same
    (services/gateway/rpc_client.py)."""

    def setup(self):
        self.renew_queue()
        self.queue_consumer.register_provider(self)

    def renew_queue(self) -> None:
        """A new uuid, queue and routing key; calls made from now on ask for replies there."""
        reply_queue_uuid = uuid.uuid4()
        self.routing_key = str(reply_queue_uuid)
        self.queue = Queue(RPC_REPLY_QUEUE_TEMPLATE.format(self.container.service_name, reply_queue_uuid),
                           exchange=get_rpc_exchange(self.container.config), routing_key=self.routing_key,
                           durable=False, queue_arguments={"x-expires": RPC_REPLY_QUEUE_TTL})


class TransientReplyListener(_TransientReplyQueue, ReplyListener):
    queue_consumer = QueueConsumer()


class RpcProxy(NamekoRpcProxy):
    """nameko's RpcProxy (calls from inside a service), with a transient reply queue."""
    rpc_reply_listener = TransientReplyListener()


class _RenewingPollingQueueConsumer(PollingQueueConsumer):
    """The standalone proxy's consumer: a new reply queue each time it (re)connects its consumer."""

    def _setup_consumer(self):
        self.provider.renew_queue()
        self.queue = self.provider.queue
        super()._setup_consumer()


class TransientSingleThreadedReplyListener(_TransientReplyQueue, SingleThreadedReplyListener):
    def __init__(self, timeout=None):
        super().__init__(timeout)
        self.queue_consumer = _RenewingPollingQueueConsumer(timeout=timeout)


class ClusterRpcProxy(NamekoClusterRpcProxy):
    """nameko's standalone ClusterRpcProxy (clients, tools), with a transient reply queue, so a
    long-lived proxy survives the loss of the node its reply queue was on."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("reply_listener_cls", TransientSingleThreadedReplyListener)
        super().__init__(*args, **kwargs)


class RequeuePause:
    """How long a handler that fails and has its message requeued waits first: 1 s, doubling while
    failures follow one another in this process (the database is away), up to ``longest``; 1 s
    again after a success. With quorum queues every requeue counts against ``DELIVERY_LIMIT``: at
    30 s a pause, a message outlasts a database outage of about ten minutes before it is
    dead-lettered, while one that fails alone (others succeed in between) gets there in under a
    minute instead of looping forever."""

    def __init__(self, first: float = 1.0, longest: float = 30.0):
        self.first, self.longest, self._streak = first, longest, 0

    def failed(self) -> float:
        seconds = min(self.longest, self.first * 2 ** min(self._streak, 16))
        self._streak += 1
        return seconds

    def succeeded(self) -> None:
        self._streak = 0
